"""Pooling token states into one caption embedding.

`pool_mask` marks the caption's own tokens (not the instruction, not special tokens);
`attention_mask` marks every real (non-pad) token. `POOLINGS` (at the end) names each
pooling: the settings, the stage-1 config and the CLI accept exactly its keys.
"""
from __future__ import annotations

import torch


def pool(hidden: torch.Tensor, pool_mask: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """[B, T, D] token states -> [B, D] float32 embeddings."""
    if how not in POOLINGS:
        raise ValueError(f"unknown pooling {how!r}; one of {', '.join(POOLINGS)}")
    return POOLINGS[how](hidden.float(), pool_mask, attention_mask)


def mean_pool(hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    weights = pool_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def weighted_mean_pool(hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """Position-weighted mean (SGPT): the k-th caption token gets weight k.

    Later tokens have seen more of the caption under causal attention, so they count more.
    """
    mask = pool_mask.to(hidden.dtype)
    weights = (mask.cumsum(1) * mask).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The state of the last real token (the EOS we append), wherever the padding is."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask.long()).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


# name -> pooling of (float token states, pool_mask, attention_mask); the one list of poolings
POOLINGS = {
    "mean": lambda hidden, pool_mask, attention_mask: mean_pool(hidden, pool_mask),
    "last": lambda hidden, pool_mask, attention_mask: last_token_pool(hidden, attention_mask),
    "weighted_mean": lambda hidden, pool_mask, attention_mask: weighted_mean_pool(hidden, pool_mask),
}
