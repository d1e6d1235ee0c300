"""CaptionEncoder behaviour against independent truth (tiny random Llama and Qwen2)."""
import pytest
import torch
import torch.nn.functional as F

from llm2clip import CaptionEncoder
from llm2clip.text.model_names import ModelNotFoundError

CAPTIONS = [
    "a cat on a sofa",
    "two dogs run across a green field under a blue sky while the sun sets behind the mountains",
    "an apple",
    "a man riding a bicycle down a busy city street at night",
]
INSTRUCTION = "Given a caption, retrieve a similar relevant caption."


def states(encoder, caption):
    """Token states of one unpadded caption, and its tokenisation."""
    item = encoder.tokenize_one(caption)
    ids = torch.tensor([item.input_ids])
    with torch.no_grad():
        hidden = encoder.hidden_states(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None])
    return hidden[0], item


def test_bidirectional_first_token_sees_later_tokens(tiny_llm):
    encoder = CaptionEncoder.from_pretrained(tiny_llm)
    first_a = states(encoder, "a cat on a sofa")[0][0]
    first_b = states(encoder, "a cat on a table")[0][0]
    assert not torch.allclose(first_a, first_b, atol=1e-6)

    encoder.set_bidirectional(False)
    first_a = states(encoder, "a cat on a sofa")[0][0]
    first_b = states(encoder, "a cat on a table")[0][0]
    assert torch.allclose(first_a, first_b, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "last", "weighted_mean"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_batch_padding_and_side_invariance(tiny_llm, pooling, bidirectional):
    encoder = CaptionEncoder.from_pretrained(tiny_llm, pooling=pooling, bidirectional=bidirectional,
                                             instruction=INSTRUCTION)
    alone = torch.cat([encoder.encode([c]) for c in CAPTIONS])
    batched = encoder.encode(CAPTIONS, batch_size=4)
    pairs = encoder.encode(CAPTIONS[::-1], batch_size=2).flip(0)
    encoder.padding_side = "left"
    left = encoder.encode(CAPTIONS, batch_size=4)
    for other in (batched, pairs, left):
        torch.testing.assert_close(other, alone, atol=2e-5, rtol=0)
    torch.testing.assert_close(alone.norm(dim=-1), torch.ones(len(CAPTIONS)))


def test_pooling_matches_manual_reference(tiny_llama):
    caption = CAPTIONS[1]
    for pooling in ("mean", "last", "weighted_mean"):
        encoder = CaptionEncoder.from_pretrained(tiny_llama, pooling=pooling, instruction=INSTRUCTION)
        hidden, item = states(encoder, caption)
        caption_rows = [i for i, p in enumerate(item.pool_mask) if p]
        if pooling == "mean":
            expected = hidden[caption_rows].mean(0)
        elif pooling == "last":
            expected = hidden[-1]
        else:
            weights = torch.arange(1, len(caption_rows) + 1, dtype=torch.float32)
            expected = (hidden[caption_rows] * weights[:, None]).sum(0) / weights.sum()
        torch.testing.assert_close(encoder.encode([caption])[0], F.normalize(expected, dim=0), atol=1e-5, rtol=0)


def test_instruction_attended_but_not_pooled(tiny_llama):
    plain = CaptionEncoder.from_pretrained(tiny_llama)
    instructed = CaptionEncoder.from_pretrained(tiny_llama, instruction=INSTRUCTION)
    caption = "a cat on a sofa"
    item = instructed.tokenize_one(caption)
    pooled_ids = [t for t, p in zip(item.input_ids, item.pool_mask) if p]
    # the pooled tokens are exactly the caption's own tokens
    assert pooled_ids == plain.tokenizer(" " + caption, add_special_tokens=False)["input_ids"]
    assert len(item.input_ids) > len(pooled_ids) + 10  # the instruction is in the sequence
    # ... and it is attended to: the embedding changes
    assert not torch.allclose(plain.encode([caption]), instructed.encode([caption]), atol=1e-4)


def test_truncation_is_counted_and_bounded(tiny_llama):
    encoder = CaptionEncoder.from_pretrained(tiny_llama, max_length=16, instruction="Embed this.")
    long_caption = "a cat on a sofa " * 50
    item = encoder.tokenize_one(long_caption)
    assert len(item.input_ids) == 16 and item.truncated
    assert item.input_ids[-1] == encoder.tokenizer.eos_token_id
    assert encoder.encode([long_caption, "an apple", "x" * 100_000]).truncated == 2
    assert encoder.encode(["an apple"]).truncated == 0  # each result counts its own call
    before = encoder.num_truncated  # the training batches' tally (tokenize)
    encoder.tokenize([long_caption, "an apple"])
    assert encoder.num_truncated == before + 1
    with pytest.raises(ValueError, match="no room for the caption"):
        CaptionEncoder.from_pretrained(tiny_llama, max_length=4, instruction=INSTRUCTION).encode(["a cat"])


def test_bad_captions_and_names(tiny_llama):
    encoder = CaptionEncoder.from_pretrained(tiny_llama)
    with pytest.raises(ValueError, match="caption 1 is empty"):
        encoder.encode(["a cat", "   "])
    with pytest.raises(TypeError):
        encoder.encode("a cat")
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        CaptionEncoder.from_pretrained("no-such-model")
    with pytest.raises(ValueError, match="pooling"):
        CaptionEncoder.from_pretrained(tiny_llama, pooling="max")


def _perturb_lora(encoder, seed=0):
    """LoRA B starts at zero (identity); give it values so the adapter matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def test_lora_trains_only_adapter_weights(tiny_llm):
    encoder = CaptionEncoder.from_pretrained(tiny_llm, lora=True)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    optimizer = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=0.1)
    encoder.train()
    batch = encoder.tokenize(CAPTIONS)
    encoder(**batch).pow(2).sum().backward()
    optimizer.step()
    changed = {n for n, p in encoder.named_parameters() if not torch.equal(before[n], p)}
    assert changed <= trainable  # the base model is untouched
    # lora_B starts at zero, so only it receives a gradient on the first step
    assert {n for n in trainable if "lora_B" in n} <= changed


def test_adapter_save_load_round_trip_is_exact(tiny_llm, tmp_path):
    encoder = CaptionEncoder.from_pretrained(tiny_llm, lora=True, instruction=INSTRUCTION, pooling="weighted_mean")
    _perturb_lora(encoder)
    expected = encoder.encode(CAPTIONS)
    encoder.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    reloaded = CaptionEncoder.from_pretrained(tmp_path / "adapter")
    assert reloaded.settings == encoder.settings
    assert torch.equal(reloaded.encode(CAPTIONS), expected)


def test_merged_save_equals_unmerged_and_loads_as_plain_hf(tiny_llm, tmp_path):
    from transformers import AutoModel

    encoder = CaptionEncoder.from_pretrained(tiny_llm, lora=True)
    _perturb_lora(encoder, seed=1)
    expected = encoder.encode(CAPTIONS)
    encoder.save_pretrained(tmp_path / "merged", merge=True)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = CaptionEncoder.from_pretrained(tmp_path / "merged")
    assert not merged.has_lora
    torch.testing.assert_close(merged.encode(CAPTIONS), expected, atol=1e-5, rtol=0)
    plain = AutoModel.from_pretrained(tmp_path / "merged")
    assert plain.config.is_causal is False  # bidirectional travels with the folder
    # the encoder keeps its adapter after a merged save
    assert encoder.has_lora and torch.equal(encoder.encode(CAPTIONS), expected)


def test_gradient_checkpointing_gives_same_gradients(tiny_llama):
    grads = []
    for checkpointing in (False, True):
        encoder = CaptionEncoder.from_pretrained(tiny_llama, lora={"dropout": 0.0})
        _perturb_lora(encoder)
        if checkpointing:
            encoder.gradient_checkpointing_enable()
            assert encoder.base_model.is_activation_checkpointing
        encoder.train()
        encoder(**encoder.tokenize(CAPTIONS)).pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in encoder.named_parameters() if p.requires_grad})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


def test_passing_lora_to_an_adapter_folder_is_refused(tiny_llama, tmp_path):
    encoder = CaptionEncoder.from_pretrained(tiny_llama, lora=True)
    encoder.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="already holds a LoRA adapter"):
        CaptionEncoder.from_pretrained(tmp_path, lora=True)


@pytest.mark.slow
def test_embedded_smollm2_loads_by_short_name():
    encoder = CaptionEncoder.from_pretrained("smollm2-135m", max_length=64)
    assert encoder.dim == 576 and type(encoder.base_model).__name__ == "LlamaModel"
    emb = encoder.encode(["a photo of a cat", "a picture of a cat", "a bowl of soup"])
    assert emb.shape == (3, 576)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2]  # a real language model knows cats from soup
