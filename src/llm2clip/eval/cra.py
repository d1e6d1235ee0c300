"""Caption retrieval accuracy (CRA), the paper's Table 1 protocol.

For each image, captions 1 and 2 form a pair; from caption 1, retrieve caption 2 among
all images' second captions. Top-1 (and top-5) accuracy in percent.
"""
from __future__ import annotations

import logging
import os

import torch

from ..data.records import read_caption_records
from .retrieval import text_to_image_ranks

log = logging.getLogger("llm2clip.cra")


def caption_retrieval_accuracy(first: torch.Tensor, second: torch.Tensor,
                               ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Row i of `first` should retrieve row i of `second` (L2-normalised [N, D])."""
    if first.shape != second.shape:
        raise ValueError(f"first and second captions differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}")
    ranks = text_to_image_ranks(second.float().cpu(), first.float().cpu(), torch.arange(len(first)))
    result = {f"top{k}": 100.0 * (ranks < k).double().mean().item() for k in ks}
    result["n"] = len(first)
    return result


def cra_for_encoder(encoder, path: str | os.PathLike, fields: list[str] | None = None, limit: int | None = None,
                    batch_size: int = 64, show_progress: bool = False) -> dict[str, float]:
    """CRA of a CaptionEncoder on the records of `path` that have two or more captions
    (the first `limit` of them when given)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None: all records), got {limit}")
    records, stats = read_caption_records(path, caption_fields=fields, min_captions=2)
    log.info("CRA captions: %s", stats.summary())
    if limit is not None:
        records = records[:limit]
    if len(records) < 2:
        raise ValueError(f"{path}: CRA needs at least two records with two captions, found {len(records)}")
    texts = [r.captions[0] for r in records] + [r.captions[1] for r in records]
    embeddings = encoder.encode(texts, batch_size=batch_size, show_progress=show_progress)
    return caption_retrieval_accuracy(embeddings[:len(records)], embeddings[len(records):])
