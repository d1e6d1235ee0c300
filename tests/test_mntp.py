"""MNTP (train/mntp.py): which tokens are masked, and the i-1 shift of the prediction."""
import pytest
import torch
import torch.nn.functional as F

from llm2clip.train.mntp import IGNORE, mask_caption_tokens, mask_token_id, mntp_loss

MASK = 99


def batch(pool_mask: list[list[int]]) -> dict[str, torch.Tensor]:
    pool = torch.tensor(pool_mask, dtype=torch.long)
    ids = torch.arange(1, pool.numel() + 1).reshape(pool.shape)  # every position its own id
    return {"input_ids": ids, "pool_mask": pool, "attention_mask": torch.ones_like(pool)}


def test_every_caption_token_but_position_0_is_masked_at_probability_1():
    b = batch([[1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]])
    pool_before, ids_before = b["pool_mask"].clone(), b["input_ids"].clone()
    masked, labels = mask_caption_tokens(b, MASK, 1.0, torch.Generator().manual_seed(0))
    chosen = pool_before.bool()
    chosen[:, 0] = False  # no state before position 0 to predict it from
    assert torch.equal(masked, torch.where(chosen, torch.tensor(MASK), ids_before))
    assert torch.equal(labels, torch.where(chosen, ids_before, torch.tensor(IGNORE)))
    assert torch.equal(b["pool_mask"], pool_before) and torch.equal(b["input_ids"], ids_before)  # not in place


def test_probability_0_still_trains_on_one_token_the_first_candidate():
    b = batch([[0, 0, 0, 0], [1, 0, 1, 1]])
    masked, labels = mask_caption_tokens(b, MASK, 0.0, torch.Generator().manual_seed(0))
    assert (labels != IGNORE).nonzero().tolist() == [[1, 2]]
    assert masked[1, 2] == MASK and (masked == MASK).sum() == 1


def test_no_caption_token_means_nothing_masked():
    b = batch([[1, 0, 0], [1, 0, 0]])  # position 0 only: never a candidate
    masked, labels = mask_caption_tokens(b, MASK, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(masked, b["input_ids"]) and (labels == IGNORE).all()


def test_the_masked_share_follows_the_probability_and_the_generator():
    b = batch([[1] * 200] * 50)
    draws = [mask_caption_tokens(b, MASK, 0.2, torch.Generator().manual_seed(s))[1] != IGNORE for s in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    share = draws[0].float().sum().item() / (50 * 199)
    assert 0.18 < share < 0.22, share


def test_mntp_loss_predicts_token_i_from_the_state_at_i_minus_1():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8)
    head = torch.nn.Linear(8, 30, bias=False)
    labels = torch.full((2, 5), IGNORE)
    labels[0, 2], labels[0, 4], labels[1, 1] = 7, 3, 29
    expected = [F.cross_entropy(head(hidden[r, i - 1])[None], torch.tensor([labels[r, i].item()]))
                for r, i in ((0, 2), (0, 4), (1, 1))]
    assert mntp_loss(hidden, labels, head).item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)
    unshifted = torch.stack([F.cross_entropy(head(hidden[r, i])[None], torch.tensor([labels[r, i].item()]))
                             for r, i in ((0, 2), (0, 4), (1, 1))]).mean()
    assert mntp_loss(hidden, labels, head).item() != pytest.approx(unshifted.item(), rel=1e-3)


def test_mask_token_falls_back_to_unk_pad_then_eos():
    from types import SimpleNamespace as T

    assert mask_token_id(T(mask_token_id=5, unk_token_id=6, pad_token_id=7, eos_token_id=8)) == 5
    assert mask_token_id(T(mask_token_id=None, unk_token_id=6, pad_token_id=7, eos_token_id=8)) == 6
    assert mask_token_id(T(mask_token_id=None, unk_token_id=None, pad_token_id=7, eos_token_id=8)) == 7
    assert mask_token_id(T(mask_token_id=None, unk_token_id=None, pad_token_id=None, eos_token_id=8)) == 8
    with pytest.raises(ValueError, match="no mask"):
        mask_token_id(T(mask_token_id=None, unk_token_id=None, pad_token_id=None, eos_token_id=None))
