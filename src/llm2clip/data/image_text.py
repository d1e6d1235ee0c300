"""Stage-2 samples: an image, the caption chosen for it, and that caption's embedding.

Rows come from caption records (CSV/TSV/JSONL with an image path and caption fields) or
from webdataset shards (see webdataset_source.py). The dataset is indexed by
`(index, epoch)` pairs, which a `StepBatchSampler` yields, so the caption choice (real
vs dense) depends only on (seed, epoch, index) and the captions it may draw from: offline,
those the store holds for the sample, which stage 2 has checked against the records'
texts before the first step. A sample whose image is unreadable, whose path leaves the
image root, or that has no caption is *skipped*: the batch carries the reason instead,
and the trainer counts and lists them at the end.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataError
from .batch_plan import BatchPlan
from .caption_choice import CaptionChoice, drawable_captions
from .image_paths import resolve_image_path
from .records import CaptionRecord


class ImageTextDataset(Dataset):
    def __init__(self, records: Sequence[CaptionRecord], image_root: str | os.PathLike,
                 preprocess: Callable[[list], torch.Tensor], choice: CaptionChoice,
                 store=None, with_text: bool = False):
        self.records = list(records)
        self.image_root = Path(image_root)
        self.preprocess = preprocess
        self.choice = choice
        self.store = store  # an EmbeddingStore for offline training, else None
        self.with_text = with_text  # online modes encode the caption text in the loop
        self.image_features: dict[int, torch.Tensor | str] | None = None  # set by cache_image_features

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        record = self.records[index]
        captions = drawable_captions(record.caption_by_source(), record.id, self.store)
        source = self.choice.pick(captions, index, epoch)
        if source is None:
            return _skipped(record.id, "no_caption_in_the_configured_fields")
        item: dict[str, Any] = {"id": record.id, "source": source}
        if self.store is not None:  # verified against the records before training (alignment.py)
            item["text_embedding"] = torch.from_numpy(self.store.get(record.id, source))
        if self.with_text:
            item["text"] = captions[source]
        if self.image_features is not None:  # a frozen tower's features, computed once
            cached = self.image_features[index]
            if isinstance(cached, str):
                return _skipped(record.id, cached)
            item["features"] = cached
            return item
        try:
            item["pixels"] = self.load_pixels(index)
        except (DataError, OSError) as err:  # ImageError is a DataError
            return _skipped(record.id, type(err).__name__ + ": " + str(err))
        return item

    def load_pixels(self, index: int) -> torch.Tensor:
        return self.preprocess([self._load(self.records[index])])[0]

    def _load(self, record: CaptionRecord):
        from ..vision.image_loading import load_image

        if not record.image:
            raise DataError(f"record {record.id!r}: no image path")
        return load_image(resolve_image_path(self.image_root, record.image, f"record {record.id!r}"))


def _skipped(sample_id: str, reason: str) -> dict[str, Any]:
    return {"id": sample_id, "skipped": reason}


def collate_samples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples; carry the skipped ones' (id, reason) along."""
    good = [item for item in items if "skipped" not in item]
    batch: dict[str, Any] = {
        "ids": [item["id"] for item in good],
        "sources": [item["source"] for item in good],
        "skipped": [(item["id"], item["skipped"]) for item in items if "skipped" in item],
    }
    if good:
        if "pixels" in good[0]:
            batch["pixels"] = torch.stack([item["pixels"] for item in good])
        else:
            batch["image_features"] = torch.stack([item["features"] for item in good])
        if "text_embedding" in good[0]:
            batch["text_embeddings"] = torch.stack([item["text_embedding"] for item in good]).float()
        if "text" in good[0]:
            batch["texts"] = [item["text"] for item in good]
    return batch


class StepBatchSampler(Sampler):
    """This rank's `(index, epoch)` lists for steps start..stop-1 of a BatchPlan."""

    def __init__(self, plan: BatchPlan, start: int, stop: int, rank: int = 0, world_size: int = 1):
        self.plan, self.start, self.stop, self.rank, self.world_size = plan, start, stop, rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            epoch = self.plan.epoch_of(step)
            yield [(i, epoch) for i in self.plan.local_indices(step, self.rank, self.world_size)]
