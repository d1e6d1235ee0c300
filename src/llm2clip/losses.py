"""Contrastive losses for both stages, as pure functions of L2-normalised [B, D] features.

Under torch.distributed every loss first gathers all ranks' features with gradient, so
each rank computes the loss of the whole global batch (row i of the global `a` matches
row i of the global `b`): the value equals the single-process loss on the concatenated
batch, and, with DDP's gradient averaging, so do the gradients (see distributed.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .distributed import gather_with_grad


def _global(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, in at least float32: at temperature 0.02 (logits up to 50) the
    bf16 rounding of a cosine would move a logit by ~0.2."""
    x = gather_with_grad(x)
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def simcse_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float = 0.02,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Supervised SimCSE / in-batch InfoNCE, one direction (a -> b).

    loss = mean_i -log( exp(a_i.b_i / t) / sum_c exp(a_i.c / t) ),
    candidates c = all rows of b, then all rows of `negatives` (hard negatives) if given.
    """
    a, b = _global(a), _global(b)
    candidates = b if negatives is None else torch.cat([b, _global(negatives)], dim=0)
    logits = a @ candidates.T / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits, labels)


def clip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP).

    logits = logit_scale * image @ text.T (+ logit_bias); loss = (CE(logits, I) +
    CE(logits.T, I)) / 2 with the diagonal as targets. `logit_scale` is already exponentiated.
    """
    image, text = _global(image), _global(text)
    logits = logit_scale * image @ text.T
    if logit_bias is not None:
        logits = logits + logit_bias
    labels = torch.arange(image.shape[0], device=image.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def siglip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
) -> torch.Tensor:
    """Sigmoid loss (SigLIP).

    logits = logit_scale * image @ text.T + logit_bias, labels = 2I - 1 (+1 on the
    diagonal, -1 elsewhere); loss = -sum_ij log sigmoid(labels_ij * logits_ij) / B.
    """
    image, text = _global(image), _global(text)
    logits = logit_scale * image @ text.T + logit_bias
    n = image.shape[0]
    labels = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / n


@dataclass(frozen=True)
class ImageTextLoss:
    """A stage-2 contrastive loss as `train.loss` names it: `fn(image, text, logit_scale,
    logit_bias)`, and whether the model trains a logit bias for it (`model.logit_bias_init`)."""

    fn: Callable[..., torch.Tensor]
    learns_bias: bool


# the one list of stage-2 losses: the config validates `train.loss` against its keys
LOSSES = {
    "clip": ImageTextLoss(clip_loss, learns_bias=False),
    "siglip": ImageTextLoss(siglip_loss, learns_bias=True),
}
