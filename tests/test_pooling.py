"""The three poolings on hand-made token states, against each definition written out per row."""
import pytest
import torch

from llm2clip.text.pooling import POOLINGS, pool

# two rows of 4 token states; row 0: caption tokens 1, 2 (right-padded after 3);
# row 1: one caption token at 2, left-padded (positions 0 is padding)
HIDDEN = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3) - 7.0
POOL = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 0]])
ATTENTION = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])


def test_mean_is_the_plain_average_of_the_caption_tokens():
    got = pool(HIDDEN, POOL, ATTENTION, "mean")
    torch.testing.assert_close(got[0], (HIDDEN[0, 1] + HIDDEN[0, 2]) / 2)
    torch.testing.assert_close(got[1], HIDDEN[1, 2])  # one token: itself, not halved


def test_weighted_mean_weighs_the_kth_caption_token_by_k():
    got = pool(HIDDEN, POOL, ATTENTION, "weighted_mean")
    torch.testing.assert_close(got[0], (1 * HIDDEN[0, 1] + 2 * HIDDEN[0, 2]) / 3)
    torch.testing.assert_close(got[1], HIDDEN[1, 2])
    three = torch.tensor([[1, 1, 1, 0]])
    torch.testing.assert_close(pool(HIDDEN[:1], three, three, "weighted_mean")[0],
                               (HIDDEN[0, 0] + 2 * HIDDEN[0, 1] + 3 * HIDDEN[0, 2]) / 6)


def test_last_is_the_last_attended_token_on_either_padding_side():
    got = pool(HIDDEN, POOL, ATTENTION, "last")
    torch.testing.assert_close(got, torch.stack([HIDDEN[0, 2], HIDDEN[1, 3]]))


@pytest.mark.parametrize("how", sorted(POOLINGS))
def test_float32_out_of_half_precision_states_and_zeros_for_an_empty_mask(how):
    got = pool(HIDDEN.to(torch.bfloat16), POOL, ATTENTION, how)
    assert got.dtype == torch.float32 and got.shape == (2, 3)
    if how != "last":  # no caption token: zeros, not NaN (the encoder refuses empty captions earlier)
        empty = torch.zeros(1, 4, dtype=torch.long)
        assert pool(HIDDEN[:1], empty, ATTENTION[:1], how).tolist() == [[0.0, 0.0, 0.0]]


def test_an_unknown_pooling_is_named_with_the_choices():
    with pytest.raises(ValueError) as err:
        pool(HIDDEN, POOL, ATTENTION, "max")
    assert str(err.value) == "unknown pooling 'max'; one of mean, last, weighted_mean"
