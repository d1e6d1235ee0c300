"""Global batches as a pure function of (seed, step), sliced per rank.

Shared by both stages: each epoch is a fresh permutation drawn from (seed, stream,
epoch); step s of an epoch takes the s-th block of it; rank r of W takes the r-th
contiguous part of that block. So the ranks' batches concatenated in rank order are the
single-process batch (what the cross-rank loss gathers), and a run resumed at step s
sees exactly what an uninterrupted one would.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def epoch_permutation(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


def rank_slice(items: list, rank: int, world_size: int) -> list:
    if len(items) % world_size:
        raise ValueError(f"global batch {len(items)} does not split over {world_size} processes")
    size = len(items) // world_size
    return items[rank * size:(rank + 1) * size]


class BatchPlan:
    """Indices into `n` samples for every step; the last partial block of an epoch is dropped."""

    def __init__(self, n: int, global_batch_size: int, seed: int = 0, stream: int = 0):
        if global_batch_size < 1:
            raise ValueError(f"global batch size must be at least 1, got {global_batch_size}")
        if n < global_batch_size:
            raise ValueError(f"{n} samples cannot fill one global batch of {global_batch_size}")
        self.n, self.global_batch_size, self.seed, self.stream = n, global_batch_size, seed, stream

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch_size

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def global_indices(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        block = epoch_permutation(self.seed, self.stream, epoch, self.n)
        return block[position * self.global_batch_size:(position + 1) * self.global_batch_size].tolist()

    def local_indices(self, step: int, rank: int = 0, world_size: int = 1) -> list[int]:
        return rank_slice(self.global_indices(step), rank, world_size)
