"""Image-text retrieval metrics (I2T and T2I Recall@K, mean and median rank), chunked.

Ranks are counted, never sorted: for a query, the rank of its best correct item is the
number of wrong items that score at least as high (ties count against the query, so a
model that maps everything to one point gets no credit). Queries are processed in
chunks sized to a memory budget, so 100k x 100k needs one [chunk, N] block at a time:
compute grows as N^2, memory as N.
"""
from __future__ import annotations

import numpy as np
import torch

DEFAULT_BLOCK_ELEMENTS = 32 * 1024 * 1024  # scores held at once (128 MiB in float32)


def retrieval_metrics(
    image_emb,
    text_emb,
    text_to_image,
    ks: tuple[int, ...] = (1, 5, 10),
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> dict[str, float]:
    """Recall@K in percent for both directions, plus mean/median rank (1 = first).

    `text_to_image[j]` is the image index of text j; an image may have any number of
    texts. I2T: a hit when any of the image's texts is in the top k (images without a
    text are left out). Inputs are L2-normalised [N, D] tensors or arrays.
    """
    images, texts = _as_tensor(image_emb), _as_tensor(text_emb)
    owner = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    _check(images, texts, owner)
    t2i = text_to_image_ranks(images, texts, owner, block_elements)
    i2t = image_to_text_ranks(images, texts, owner, block_elements)
    metrics: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            metrics[f"{name}_R@{k}"] = 100.0 * (ranks < k).double().mean().item()
        metrics[f"{name}_mean_rank"] = ranks.double().mean().item() + 1
        metrics[f"{name}_median_rank"] = ranks.float().median().item() + 1
    metrics["n_images"], metrics["n_texts"] = len(images), len(texts)
    return metrics


@torch.no_grad()
def text_to_image_ranks(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor,
                        block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """0-based rank of each text's own image among all images."""
    ranks = torch.empty(len(texts), dtype=torch.long)
    step = _chunk(len(images), block_elements)
    for start in range(0, len(texts), step):
        stop = min(start + step, len(texts))
        scores = texts[start:stop] @ images.T  # [chunk, n_images]
        rows = torch.arange(stop - start)
        correct = scores[rows, owner[start:stop]]
        ranks[start:stop] = _count_at_least(scores, correct) - 1  # minus the image itself
    return ranks


@torch.no_grad()
def image_to_text_ranks(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor,
                        block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """0-based rank of each image's best own text among all texts (images with texts only)."""
    has_text = torch.zeros(len(images), dtype=torch.bool)
    has_text[owner] = True
    # texts grouped by image, so a chunk of images finds its own texts by slicing, and the
    # score block is read only twice (matmul out, one comparison): no [chunk, N] masks
    by_image = torch.argsort(owner, stable=True)
    bounds = torch.searchsorted(owner[by_image], torch.arange(len(images) + 1)).tolist()
    ranks = torch.empty(len(images), dtype=torch.long)
    step = _chunk(len(texts), block_elements)
    for start in range(0, len(images), step):
        stop = min(start + step, len(images))
        scores = images[start:stop] @ texts.T  # [chunk, n_texts]
        cols = by_image[bounds[start]:bounds[stop]]  # this chunk's own texts
        rows = owner[cols] - start
        own = scores[rows, cols]
        best_own = torch.full((stop - start,), float("-inf")).scatter_reduce_(0, rows, own, "amax")
        own_at_best = torch.zeros(stop - start, dtype=torch.long).scatter_add_(0, rows, (own >= best_own[rows]).long())
        # wrong texts scoring at least the best own one = all such texts minus the own ones
        ranks[start:stop] = _count_at_least(scores, best_own) - own_at_best
    return ranks[has_text]


def _count_at_least(scores: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Per row, how many scores are >= its threshold. Overwrites `scores` (a scratch block).

    In place and summed as floats: `(scores >= t).sum(1)` would allocate a bool block and
    convert it to int64 on the way, which costs more than the matmul's share on a CPU.
    Sums of 0/1 values are exact in float32 up to 2**24 per row, in float64 beyond.
    """
    exact = torch.float32 if scores.shape[1] < 2 ** 24 else torch.float64
    return scores.ge_(threshold[:, None]).sum(1, dtype=exact).long()


def _chunk(n_keys: int, block_elements: int) -> int:
    return max(1, block_elements // max(1, n_keys))


def _as_tensor(x) -> torch.Tensor:
    t = x.detach() if torch.is_tensor(x) else torch.from_numpy(np.asarray(x))
    return t.float().cpu()


def _check(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor) -> None:
    if images.ndim != 2 or texts.ndim != 2:
        raise ValueError(f"embeddings must be [N, D]; got images {tuple(images.shape)}, texts {tuple(texts.shape)}")
    if images.shape[1] != texts.shape[1]:
        raise ValueError(f"image embeddings have dimension {images.shape[1]} but text embeddings {texts.shape[1]}")
    if len(owner) != len(texts):
        raise ValueError(f"text_to_image has {len(owner)} entries for {len(texts)} texts")
    if len(texts) == 0 or len(images) == 0:
        raise ValueError("retrieval needs at least one image and one text")
    if owner.min() < 0 or owner.max() >= len(images):
        raise ValueError(f"text_to_image holds an index outside [0, {len(images)})")
    # a NaN score compares False with everything, so a NaN row would rank first: refuse it
    for name, emb in (("image", images), ("text", texts)):
        bad = (~torch.isfinite(emb)).any(1).nonzero().flatten()
        if len(bad):
            raise ValueError(f"{len(bad)} {name} embeddings hold NaN/inf (first at row {bad[0].item()}); "
                             "the model produced non-finite outputs")
