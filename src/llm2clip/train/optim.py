"""Optimiser and learning-rate schedule shared by both stages."""
from __future__ import annotations

import torch

from ..choices import SCHEDULES


def build_adamw(param_groups: list[dict], lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
    """AdamW over explicit parameter groups (each may carry its own lr / weight_decay)."""
    groups = [g for g in param_groups if g["params"]]
    if not groups:
        raise ValueError("nothing to train: no parameter requires a gradient")
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


def build_schedule(optimizer, name: str, warmup_steps: int, total_steps: int):
    """Linear warmup for `warmup_steps`, then linear decay, cosine decay or constant."""
    from transformers import get_scheduler

    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    hf_name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[name]
    return get_scheduler(hf_name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max(total_steps, 1))


def decay_groups(params, lr: float, weight_decay: float) -> list[dict]:
    """Two groups of the trainable `params`: weights with decay, and biases/norms (1-D)
    without, as is customary."""
    decay, no_decay = [], []
    for param in params:
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]


def total_steps(max_steps: int | None, epochs: int, steps_per_epoch: int, grad_accum: int) -> int:
    """Optimiser steps of a run: `max_steps` when set, else whole epochs of micro-steps."""
    if max_steps:
        return int(max_steps)
    steps = epochs * steps_per_epoch // grad_accum
    if steps < 1:
        raise ValueError("the data is smaller than one optimiser step: lower batch_size or grad_accum")
    return steps
