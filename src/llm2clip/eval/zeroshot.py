"""Zero-shot image classification: class embeddings from prompt templates, top-k accuracy.

A class is embedded CLIP-style (prompt ensembling): every template is filled with the class
name, each prompt is encoded and L2-normalised, the prompts are averaged and the mean is
normalised again. An image is then classified by cosine similarity to the class embeddings.

Accuracy uses ranks, never sorting (as in retrieval.py): the rank of an image's true class
is the number of wrong classes that score at least as high, so ties count against the
image and a collapsed model (every score equal) scores 0, not 100.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .retrieval import DEFAULT_BLOCK_ELEMENTS

Template = str | Callable[[str], str]


def fill_template(template: Template, class_name: str) -> str:
    """`"a photo of a {}."` -> `"a photo of a dog."`; a callable template is called."""
    return template(class_name) if callable(template) else template.format(class_name)


@torch.no_grad()
def class_text_embeddings(encode_text: Callable[[list[str]], torch.Tensor], class_names: Sequence[str],
                          templates: Sequence[Template], batch_size: int = 256) -> torch.Tensor:
    """[C, D] L2-normalised class embeddings: mean of the normalised prompt embeddings.

    `encode_text` maps a list of strings to an [N, D] tensor (one row per string). Prompts
    are sent in batches of `batch_size` so a 1000-class x 80-template ensemble never has to
    be encoded in one call.
    """
    if not class_names or not templates:
        raise ValueError("zero-shot classification needs at least one class name and one template")
    prompts = [fill_template(t, name) for name in class_names for t in templates]
    rows = [_as_tensor(encode_text(prompts[i:i + batch_size])) for i in range(0, len(prompts), batch_size)]
    embedded = torch.cat(rows)
    if len(embedded) != len(prompts):
        raise ValueError(f"encode_text returned {len(embedded)} rows for {len(prompts)} prompts")
    per_prompt = F.normalize(embedded, dim=-1).view(len(class_names), len(templates), -1)
    return F.normalize(per_prompt.mean(1), dim=-1)


def zeroshot_metrics(image_emb, class_emb, labels, ks: tuple[int, ...] = (1, 5),
                     block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> dict[str, float]:
    """Top-k accuracy in percent (keys `top1`, `top5`, ...) and `n`, the number of images.

    `image_emb` [N, D] and `class_emb` [C, D] are L2-normalised; `labels[i]` is image i's
    class index. Scores are computed `block_elements` at a time (bounded memory).
    """
    images, classes = _as_tensor(image_emb), _as_tensor(class_emb)
    targets = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    _check(images, classes, targets)
    ranks = correct_class_ranks(lambda rows: images[rows] @ classes.T, targets, len(classes), block_elements)
    return {**topk_accuracy(ranks, ks), "n": len(images)}


@torch.no_grad()
def correct_class_ranks(score_rows: Callable[[slice], torch.Tensor], labels: torch.Tensor, n_classes: int,
                        block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """0-based rank of each sample's true class: wrong classes scoring >= the true one.

    `score_rows(slice)` returns the [chunk, C] scores of those samples (cosine similarities
    for zero-shot, logits for a linear probe); only one chunk exists at a time.
    """
    ranks = torch.empty(len(labels), dtype=torch.long)
    step = max(1, block_elements // max(1, n_classes))
    for start in range(0, len(labels), step):
        rows = slice(start, min(start + step, len(labels)))
        scores = score_rows(rows)
        correct = scores.gather(1, labels[rows, None])
        ranks[rows] = (scores >= correct).sum(1) - 1  # minus the true class itself
        # A NaN score compares False everywhere and would look like rank -1 (a hit).
        ranks[rows] = torch.where(torch.isnan(scores).any(1), n_classes, ranks[rows])
    return ranks


def topk_accuracy(ranks: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """{"top1": %, "top5": %, ...} from 0-based ranks of the true class."""
    return {f"top{k}": 100.0 * (ranks < k).double().mean().item() for k in ks}


def _as_tensor(x) -> torch.Tensor:
    t = x.detach() if torch.is_tensor(x) else torch.from_numpy(np.asarray(x))
    return t.float().cpu()


def _check(images: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor) -> None:
    if images.ndim != 2 or classes.ndim != 2:
        raise ValueError(f"embeddings must be [N, D]; got images {tuple(images.shape)}, "
                         f"classes {tuple(classes.shape)}")
    if images.shape[1] != classes.shape[1]:
        raise ValueError(f"image embeddings have dimension {images.shape[1]} but class embeddings "
                         f"{classes.shape[1]}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be one class index per image: {tuple(labels.shape)} for {len(images)} images")
    if len(images) == 0 or len(classes) == 0:
        raise ValueError("zero-shot classification needs at least one image and one class")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"labels must lie in [0, {len(classes)}) for {len(classes)} classes; "
                         f"got min {labels.min().item()}, max {labels.max().item()}")
