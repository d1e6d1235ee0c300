"""The contrastive losses against brute-force element-by-element references.

The references loop over pairs with Python floats (double precision) and math.exp/log,
so they share no code path with the vectorised losses.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from llm2clip.distributed import gather_no_grad, gather_with_grad, is_distributed, rank, world_size
from llm2clip.losses import clip_loss, siglip_loss, simcse_loss


def unit_rows(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def dot(u, v):
    return math.fsum(float(x) * float(y) for x, y in zip(u, v))


def log_softmax_at(scores, target):
    top = max(scores)
    return scores[target] - top - math.log(math.fsum(math.exp(s - top) for s in scores))


def ref_simcse(a, b, t, negatives=()):
    candidates = list(b) + list(negatives)
    terms = [-log_softmax_at([dot(a[i], c) / t for c in candidates], i) for i in range(len(a))]
    return math.fsum(terms) / len(a)


def ref_clip(image, text, scale, bias=0.0):
    n = len(image)
    logit = [[scale * dot(image[i], text[j]) + bias for j in range(n)] for i in range(n)]
    i2t = [-log_softmax_at(logit[i], i) for i in range(n)]
    t2i = [-log_softmax_at([logit[i][j] for i in range(n)], j) for j in range(n)]
    return (math.fsum(i2t) / n + math.fsum(t2i) / n) / 2


def ref_siglip(image, text, scale, bias):
    n = len(image)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = scale * dot(image[i], text[j]) + bias
            y = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-y * z))  # -log sigmoid(y z)
    return total / n


# ---- agreement with the references ---------------------------------------------------


@pytest.mark.parametrize("t", [0.02, 0.05, 1.0])
def test_simcse_matches_reference(t):
    a, b = unit_rows(6, 8, 0), unit_rows(6, 8, 1)
    assert simcse_loss(a, b, temperature=t).item() == pytest.approx(ref_simcse(a, b, t), rel=1e-10)


def test_simcse_with_hard_negatives_matches_reference():
    a, b, neg = unit_rows(5, 8, 0), unit_rows(5, 8, 1), unit_rows(5, 8, 2)
    got = simcse_loss(a, b, temperature=0.05, negatives=neg).item()
    assert got == pytest.approx(ref_simcse(a, b, 0.05, neg), rel=1e-10)


@pytest.mark.parametrize("scale,bias", [(1.0, None), (14.3, None), (100.0, None), (10.0, -3.0)])
def test_clip_matches_reference(scale, bias):
    image, text = unit_rows(6, 8, 3), unit_rows(6, 8, 4)
    got = clip_loss(image, text, torch.tensor(scale, dtype=torch.float64),
                    None if bias is None else torch.tensor(bias, dtype=torch.float64))
    assert got.item() == pytest.approx(ref_clip(image, text, scale, bias or 0.0), rel=1e-10)


@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (1.0, 0.0), (30.0, 5.0)])
def test_siglip_matches_reference(scale, bias):
    image, text = unit_rows(6, 8, 5), unit_rows(6, 8, 6)
    got = siglip_loss(image, text, torch.tensor(scale, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64))
    assert got.item() == pytest.approx(ref_siglip(image, text, scale, bias), rel=1e-10)


def test_siglip_by_hand_for_two_pairs():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    text = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
    # cosines [[0.6, 1.0], [0.8, 0.0]]; logits = 10 * cos - 5 = [[1, 5], [3, -5]].
    # Matched pairs (diagonal, logits 1 and -5) pay log(1 + e^-z); the others (5 and 3)
    # pay log(1 + e^z); the sum is divided by the batch size 2.
    by_hand = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(5))
               + math.log(1 + math.exp(3)) + math.log(1 + math.exp(5))) / 2
    got = siglip_loss(image, text, torch.tensor(10.0, dtype=torch.float64), torch.tensor(-5.0, dtype=torch.float64))
    assert got.item() == pytest.approx(by_hand, rel=1e-12)


# ---- properties ----------------------------------------------------------------------


def test_high_temperature_or_zero_scale_gives_chance_level():
    # With all logits equal, InfoNCE is log(number of candidates).
    a, b, neg = unit_rows(6, 8, 0), unit_rows(6, 8, 1), unit_rows(6, 8, 2)
    assert simcse_loss(a, b, temperature=1e9).item() == pytest.approx(math.log(6))
    assert simcse_loss(a, b, temperature=1e9, negatives=neg).item() == pytest.approx(math.log(12))
    assert clip_loss(a, b, torch.tensor(0.0)).item() == pytest.approx(math.log(6))


def test_lower_temperature_sharpens_aligned_pairs():
    a = unit_rows(6, 8, 0)
    b = F.normalize(a + 0.1 * unit_rows(6, 8, 1), dim=-1)  # nearly aligned positives
    losses = [simcse_loss(a, b, temperature=t).item() for t in (1.0, 0.1, 0.02)]
    assert losses[0] > losses[1] > losses[2]
    clips = [clip_loss(a, b, torch.tensor(s)).item() for s in (1.0, 10.0, 50.0)]
    assert clips[0] > clips[1] > clips[2]


def test_hard_negatives_only_add_candidates():
    a, b, neg = unit_rows(6, 8, 0), unit_rows(6, 8, 1), unit_rows(6, 8, 2)
    assert simcse_loss(a, b, negatives=neg) > simcse_loss(a, b)
    # A hard negative identical to the positive halves that row's probability at best.
    assert simcse_loss(b, b, negatives=b).item() >= math.log(2) - 1e-12


def test_perfect_alignment_gives_low_loss():
    e = torch.eye(8, dtype=torch.float64)
    assert simcse_loss(e, e, temperature=0.02).item() < 1e-15
    assert clip_loss(e, e, torch.tensor(100.0)).item() < 1e-15
    assert siglip_loss(e, e, torch.tensor(30.0), torch.tensor(-10.0)).item() < 1e-3
    # ...and misaligned (shifted) pairs a high one.
    shifted = e.roll(1, dims=0)
    assert clip_loss(e, shifted, torch.tensor(100.0)).item() > 50


def test_clip_is_symmetric_and_ignores_a_scalar_bias():
    image, text = unit_rows(6, 8, 3), unit_rows(6, 8, 4)
    scale = torch.tensor(20.0)
    assert clip_loss(image, text, scale).item() == pytest.approx(clip_loss(text, image, scale).item())
    assert clip_loss(image, text, scale, torch.tensor(-7.0)).item() == pytest.approx(clip_loss(image, text, scale).item())


def test_gradients_are_finite_and_reach_every_input():
    a = unit_rows(6, 16, 0).float().requires_grad_()
    b = unit_rows(6, 16, 1).float().requires_grad_()
    neg = unit_rows(6, 16, 2).float().requires_grad_()
    log_scale = torch.tensor(math.log(100.0), requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    total = (simcse_loss(a, b, negatives=neg) + clip_loss(a, b, log_scale.exp())
             + siglip_loss(a, b, log_scale.exp(), bias))
    total.backward()
    for x in (a, b, neg, log_scale, bias):
        assert torch.isfinite(x.grad).all()
        assert x.grad.abs().sum() > 0


def test_half_precision_inputs_are_computed_in_float32():
    a, b = unit_rows(6, 8, 0), unit_rows(6, 8, 1)
    loss = simcse_loss(a.bfloat16(), b.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref_simcse(a.bfloat16().double(), b.bfloat16().double(), 0.02), rel=1e-5)


def test_single_process_gather_is_identity():
    assert not is_distributed() and rank() == 0 and world_size() == 1
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    assert torch.equal(gather_no_grad(x), x) and not gather_no_grad(x).requires_grad
