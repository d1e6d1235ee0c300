"""Which caption pairs every stage-1 micro-step trains on: a pure function of (seed, step).

Each epoch visits every multi-caption record once, in an order shuffled by (seed,
epoch); for each record two *distinct* captions are drawn, in random order, as anchor
and positive. Pure-text pairs, when mixed in, fill a fixed share of every batch from
their own shuffled stream. Because a batch depends only on (seed, step), a resumed run
sees exactly what an uninterrupted one would, and rank r of W processes takes the r-th
contiguous slice of the global batch, so the ranks' gathered embeddings are the global
batch in order (2 processes = 1 process).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batch_plan import BatchPlan, epoch_permutation, rank_slice
from .records import CaptionRecord
from .text_pairs import TextPair


@dataclass(frozen=True)
class PairExample:
    anchor: str
    positive: str
    negative: str | None = None
    source: str = "caption"  # caption | text


class PairSchedule:
    def __init__(self, records: list[CaptionRecord], text_pairs: list[TextPair] | None = None,
                 text_pair_ratio: float = 0.0, global_batch_size: int = 32, seed: int = 0):
        if global_batch_size < 1:
            raise ValueError(f"global batch size must be at least 1, got {global_batch_size}")
        if not 0.0 <= text_pair_ratio <= 1.0:
            raise ValueError(f"text_pair_ratio must be in [0, 1], got {text_pair_ratio}")
        if text_pair_ratio > 0 and not text_pairs:
            raise ValueError("text_pair_ratio > 0 needs text pairs (data.text_pairs)")
        self.records = [r for r in records if len(set(r.captions)) >= 2]
        self.skipped_single_caption = len(records) - len(self.records)
        self.text_pairs = list(text_pairs or [])
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.n_text = round(global_batch_size * text_pair_ratio) if self.text_pairs else 0
        self.n_caption = global_batch_size - self.n_text
        self.has_negatives = self.n_text > 0 and any(p.negative for p in self.text_pairs)
        if self.n_caption and len(self.records) < self.n_caption:
            raise ValueError(f"{len(self.records)} records with two or more distinct captions "
                             f"(of {len(records)}) cannot fill a batch of {self.n_caption} caption pairs")
        if self.n_text and len(self.text_pairs) < self.n_text:
            raise ValueError(f"{len(self.text_pairs)} text pairs cannot fill {self.n_text} per batch")
        self._record_plan = BatchPlan(len(self.records), self.n_caption, seed, stream=1) if self.n_caption else None

    @property
    def steps_per_epoch(self) -> int:
        """Micro-steps per pass over the caption records (the last partial batch is dropped)."""
        if self.n_caption:
            return self._record_plan.steps_per_epoch
        return len(self.text_pairs) // self.n_text

    def global_batch(self, step: int) -> list[PairExample]:
        """The `global_batch_size` examples of micro-step `step` (0-based), all ranks together."""
        examples = self._caption_pairs(step) + self._text_pairs(step)
        if self.n_text and self.n_caption:  # spread both kinds over the ranks' slices
            order = np.random.default_rng([self.seed, 3, step]).permutation(len(examples))
            examples = [examples[i] for i in order]
        return examples

    def local_batch(self, step: int, rank: int = 0, world_size: int = 1) -> list[PairExample]:
        return rank_slice(self.global_batch(step), rank, world_size)

    def _caption_pairs(self, step: int) -> list[PairExample]:
        if not self.n_caption:
            return []
        picks = np.random.default_rng([self.seed, 2, step])
        examples = []
        for index in self._record_plan.global_indices(step):
            captions = list(dict.fromkeys(self.records[index].captions))  # distinct, in order
            first, second = picks.choice(len(captions), size=2, replace=False)
            examples.append(PairExample(captions[first], captions[second]))
        return examples

    def _text_pairs(self, step: int) -> list[PairExample]:
        examples = []
        n = len(self.text_pairs)
        for k in range(step * self.n_text, (step + 1) * self.n_text):
            epoch, position = divmod(k, n)
            pair = self.text_pairs[epoch_permutation(self.seed, 4, epoch, n)[position]]
            examples.append(PairExample(pair.query, pair.positive, pair.negative, source="text"))
        return examples
