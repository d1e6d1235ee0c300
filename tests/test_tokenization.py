"""CaptionTokenizer and the length-batching plan, against references computed another way:
the tokenizer's own encoding of the caption alone, tensors written out by hand, and an
exhaustive search over every way of cutting the sorted captions into batches."""
from itertools import combinations

import pytest
import torch

from llm2clip.testing.random_llm import build_tokenizer
from llm2clip.text.tokenization import (BATCH_COST_SLOTS_PER_ROW, CaptionTokenizer, TokenizedCaption,
                                        padding_fraction, plan_length_batches)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()  # BOS in front, no EOS appended (like Llama-3)


def caption_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_layout_is_bos_instruction_caption_eos_and_only_the_caption_is_pooled(tokenizer):
    tok = CaptionTokenizer(tokenizer, "  Embed this caption:  ", max_length=64)
    item = tok("a red cat")
    # BOS + instruction (byte-level BPE gives the space between them to the caption's first token)
    prefix = tokenizer("Embed this caption:", add_special_tokens=True)["input_ids"]
    whole = tokenizer("Embed this caption: a red cat", add_special_tokens=True)["input_ids"]
    assert item.input_ids == whole + [tokenizer.eos_token_id]
    n_caption = len(whole) - len(prefix)
    assert n_caption == len(caption_ids(tokenizer, " a red cat")) > 0
    assert item.pool_mask == [0] * len(prefix) + [1] * n_caption + [0]
    assert item.truncated is False


def test_without_instruction_every_caption_token_is_pooled(tokenizer):
    item = CaptionTokenizer(tokenizer, None, max_length=64)("two dogs run")
    assert item.input_ids == [tokenizer.bos_token_id] + caption_ids(tokenizer, "two dogs run") + [tokenizer.eos_token_id]
    assert item.pool_mask == [0] + [1] * (len(item.input_ids) - 2) + [0]
    assert CaptionTokenizer(tokenizer, "", max_length=64)("two dogs run") == item  # "" is no instruction


def test_an_eos_the_tokenizer_appends_is_not_doubled():
    from tokenizers import processors

    tokenizer = build_tokenizer()
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    item = CaptionTokenizer(tokenizer, None, max_length=64)("a cat")
    assert item.input_ids == [bos] + caption_ids(tokenizer, "a cat") + [eos]
    assert item.pool_mask[-1] == 0 and item.pool_mask[0] == 0


def test_pad_id_falls_back_to_eos_then_zero(tokenizer):
    class Named:
        def __init__(self, pad, eos):
            self.pad_token_id, self.eos_token_id = pad, eos

    assert CaptionTokenizer(tokenizer, None, 8).pad_id == tokenizer.pad_token_id
    assert CaptionTokenizer(Named(None, 7), None, 8).pad_id == 7
    assert CaptionTokenizer(Named(None, None), None, 8).pad_id == 0
    assert CaptionTokenizer(Named(5, 7), None, 8).pad_id == 5


def test_truncation_drops_caption_tokens_from_the_end_and_keeps_the_eos(tokenizer):
    long = "a photo of a cat sitting on a red sofa next to a window"
    full = CaptionTokenizer(tokenizer, "Embed:", max_length=512)(long)
    cut = CaptionTokenizer(tokenizer, "Embed:", max_length=10)(long)
    assert len(full.input_ids) > 10 and cut.truncated and not full.truncated
    n_prefix = full.pool_mask.index(1)
    keep = 10 - n_prefix - 1  # room left for the caption beside the prefix and the EOS
    assert cut.input_ids == full.input_ids[:n_prefix + keep] + [tokenizer.eos_token_id]
    assert cut.pool_mask == [0] * n_prefix + [1] * keep + [0]
    exact = CaptionTokenizer(tokenizer, "Embed:", max_length=len(full.input_ids))(long)
    assert exact == full  # a sequence that fits exactly is not truncated
    one_over = CaptionTokenizer(tokenizer, "Embed:", max_length=len(full.input_ids) - 1)(long)
    assert one_over.truncated and one_over.input_ids == full.input_ids[:-2] + [tokenizer.eos_token_id]


def test_no_room_for_the_caption_names_the_limit_and_the_fixed_tokens(tokenizer):
    n_fixed = len(tokenizer("Embed this:")["input_ids"]) + 1  # BOS + instruction, then EOS
    with pytest.raises(ValueError) as err:
        CaptionTokenizer(tokenizer, "Embed this:", max_length=n_fixed)("a cat on a sofa")
    assert str(err.value) == (f"max_length={n_fixed} leaves no room for the caption after the instruction "
                              f"and special tokens ({n_fixed} tokens)")
    item = CaptionTokenizer(tokenizer, "Embed this:", max_length=n_fixed + 1)("a cat on a sofa")
    assert sum(item.pool_mask) == 1  # one caption token is room enough


def test_absurdly_long_captions_are_cut_by_characters_and_counted(tokenizer):
    tok = CaptionTokenizer(tokenizer, None, max_length=4)
    item = tok("x" * (4 * 64 + 1))
    assert item.truncated and len(item.input_ids) == 4
    # a caption within the character bound but not the token bound is cut by tokens only
    assert tok("x" * (4 * 64)).truncated


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_empty_or_non_string_captions_are_refused(tokenizer, bad):
    with pytest.raises(ValueError) as err:
        CaptionTokenizer(tokenizer, None, 8)(bad)
    assert str(err.value) == f"captions must be non-empty strings, got {bad!r}"


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_pads_either_side_with_positions_that_skip_padding(side):
    tok = CaptionTokenizer(type("T", (), {"pad_token_id": 9, "eos_token_id": 2})(), None, 8)
    items = [TokenizedCaption([1, 5, 6, 2], [0, 1, 1, 0], False), TokenizedCaption([1, 7, 2], [0, 1, 0], False)]
    batch = tok.collate(items, padding_side=side)
    if side == "right":
        ids, attention, pool = [[1, 5, 6, 2], [1, 7, 2, 9]], [[1, 1, 1, 1], [1, 1, 1, 0]], [[0, 1, 1, 0], [0, 1, 0, 0]]
        positions = [[0, 1, 2, 3], [0, 1, 2, 2]]
    else:
        ids, attention, pool = [[1, 5, 6, 2], [9, 1, 7, 2]], [[1, 1, 1, 1], [0, 1, 1, 1]], [[0, 1, 1, 0], [0, 0, 1, 0]]
        positions = [[0, 1, 2, 3], [0, 0, 1, 2]]
    assert batch["input_ids"].tolist() == ids and batch["attention_mask"].tolist() == attention
    assert batch["pool_mask"].tolist() == pool and batch["position_ids"].tolist() == positions
    assert all(t.dtype == torch.long for t in batch.values())
    if side == "right":  # the default
        assert all(torch.equal(batch[k], v) for k, v in tok.collate(items).items())


def test_an_unknown_padding_side_is_refused():
    tok = CaptionTokenizer(type("T", (), {"pad_token_id": 0, "eos_token_id": 2})(), None, 8)
    with pytest.raises(ValueError) as err:
        tok.collate([TokenizedCaption([1, 2], [1, 0], False)], padding_side="middle")
    assert str(err.value) == "padding_side must be 'left' or 'right', got 'middle'"


# ---------------------------------------------------------------- the length-batching plan
def best_cost_by_search(lengths, batch_size):
    """The least padded slots + per-batch cost over every cut of the sorted lengths."""
    ordered = sorted(lengths)
    n, best = len(ordered), None
    for k in range(n):
        for cuts in combinations(range(1, n), k):
            bounds = [0, *cuts, n]
            runs = [ordered[a:b] for a, b in zip(bounds, bounds[1:])]
            if any(len(run) > batch_size for run in runs):
                continue
            cost = sum(len(run) * max(run) + BATCH_COST_SLOTS_PER_ROW * batch_size for run in runs)
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("lengths, batch_size", [
    ([5, 1, 9, 3, 3, 40, 2, 8], 3), ([7] * 7, 2), ([100, 1, 1, 1, 1, 1, 1], 4), ([3, 60, 4, 61, 5], 2),
    ([12], 1), ([2, 30, 31, 2, 2, 29, 3], 7)])
def test_the_plan_is_the_least_cost_cut_and_covers_every_index_once(lengths, batch_size):
    batches = plan_length_batches(lengths, batch_size)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    cost = sum(len(b) * max(lengths[i] for i in b) + BATCH_COST_SLOTS_PER_ROW * batch_size for b in batches)
    assert cost == best_cost_by_search(lengths, batch_size)
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)  # in sorted order, shortest batch first


def test_the_plan_keeps_equal_lengths_in_input_order_and_refuses_batch_size_0():
    assert plan_length_batches([4, 4, 4, 4], 2) == [[0, 1], [2, 3]]
    assert plan_length_batches([], 3) == []
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        plan_length_batches([1], 0)


def test_padding_fraction_by_hand():
    lengths = [2, 4, 4, 1]
    # batch [0, 3] pads both to 2 (1 padding slot of 4); batch [1, 2] has none
    assert padding_fraction(lengths, [[0, 3], [1, 2]]) == pytest.approx(1 - 11 / 12)
    assert padding_fraction(lengths, [[0, 1, 2, 3]]) == pytest.approx(1 - 11 / 16)
    assert padding_fraction(lengths, [[0], [], [1]]) == 0.0
    assert padding_fraction(lengths, []) == 0.0


def test_the_separator_space_is_not_pooled_even_as_its_own_token(tokenizer):
    # byte-level BPE gives a space before a space its own token: "Embed:" + " " + " two dogs"
    item = CaptionTokenizer(tokenizer, "Embed:", max_length=64)(" two dogs")
    prefix = tokenizer("Embed:", add_special_tokens=True)["input_ids"]
    assert item.input_ids[:len(prefix)] == prefix
    separator = item.input_ids[len(prefix)]
    assert tokenizer.decode([separator]) == " "
    assert item.pool_mask == [0] * (len(prefix) + 1) + [1] * len(caption_ids(tokenizer, " two dogs")) + [0]


def test_the_tokenizers_own_length_limit_does_not_cut_captions():
    tokenizer = build_tokenizer()
    tokenizer.model_max_length = 4  # only max_length decides what is cut
    caption = "a photo of a cat sitting on a red sofa"
    item = CaptionTokenizer(tokenizer, None, max_length=64)(caption)
    assert item.input_ids == [tokenizer.bos_token_id] + caption_ids(tokenizer, caption) + [tokenizer.eos_token_id]
    assert not item.truncated
