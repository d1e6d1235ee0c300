"""Which caption a stage-2 sample trains on: real or dense, at a ratio (paper Table 7).

The paper mixes the original (real) caption with dense MLLM captions 50/50 per sample.
The choice is a pure function of (seed, epoch, sample index, available captions), so a
resumed run and a second process pick the same caption for a sample.

Available captions: online, the LLM encodes any text, so every caption of the sample;
offline, only those the embedding store holds for that sample (`drawable_captions`).
Drawing an unstored field would lose the sample (a skip) and shift the realised dense
share away from `dense_ratio`; restricted to stored fields, the ratio holds. When the
store holds every field, both modes see the same captions and pick the same one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .records import field_matches


@dataclass(frozen=True)
class CaptionChoice:
    real_fields: tuple[str, ...]
    dense_fields: tuple[str, ...] = ()
    dense_ratio: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if not self.real_fields and not self.dense_fields:
            raise ValueError("stage 2 needs at least one caption field (data.real_fields / data.dense_fields)")
        if not 0.0 <= self.dense_ratio <= 1.0:
            raise ValueError(f"dense_ratio must be in [0, 1], got {self.dense_ratio}")

    def pick(self, available: set[str] | dict, index: int, epoch: int = 0) -> str | None:
        """The source label to use, or None when the sample has no usable caption.

        A field counts when a source label equals it or is one of its list items
        (`caption.3`). A sample missing the drawn kind falls back to the other kind.
        """
        rng = np.random.default_rng([self.seed, epoch, index])
        dense_first = rng.random() < self.dense_ratio
        kinds = (self.dense_fields, self.real_fields) if dense_first else (self.real_fields, self.dense_fields)
        for fields in kinds:
            candidates = [s for s in sorted(available) if field_matches(s, fields)]
            if candidates:
                return candidates[rng.integers(len(candidates))]
        return None


def drawable_captions(captions: dict[str, str], sample_id: str, store=None) -> dict[str, str]:
    """The captions a sample may train on: all of them, or (offline, with an
    EmbeddingStore) those stored for this sample id."""
    if store is None:
        return captions
    return {source: text for source, text in captions.items() if store.row(sample_id, source) is not None}
