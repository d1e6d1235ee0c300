"""Expected R@1 when ties are broken at random.

retrieval.py counts ties against the query: a text tower that cuts two captions to the
same tokens gives them one embedding, and an image whose caption is one of them then
never ranks it first. Breaking ties at random instead, a query whose own item ties with
t - 1 others at the top is a hit with probability 1/t. Reporting both shows whether a
margin over such a tower is an artefact of the tie rule.

Scores within TIE_TOLERANCE count as tied: texts that are the same after truncation get
embeddings that are equal only up to the float noise of their differently padded batches.
"""
from __future__ import annotations

import numpy as np
import torch

from .retrieval import DEFAULT_BLOCK_ELEMENTS, _as_tensor, _check, _chunk

TIE_TOLERANCE = 1e-5


def random_tie_recall_at_1(image_emb, text_emb, text_to_image, tol: float = TIE_TOLERANCE,
                           block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> dict[str, float]:
    """{"i2t_R@1_random_ties", "t2i_R@1_random_ties"} in percent."""
    images, texts = _as_tensor(image_emb), _as_tensor(text_emb)
    owner = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    _check(images, texts, owner)
    return {"i2t_R@1_random_ties": 100.0 * i2t_expected_hits(images, texts, owner, tol, block_elements).mean().item(),
            "t2i_R@1_random_ties": 100.0 * t2i_expected_hits(images, texts, owner, tol, block_elements).mean().item()}


@torch.no_grad()
def t2i_expected_hits(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor, tol: float = TIE_TOLERANCE,
                      block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """Per text, the chance (0..1) that its image is first: 0 if another image scores more
    than `tol` above it, else 1 / (images within `tol` of it)."""
    expected = torch.empty(len(texts), dtype=torch.float64)
    step = _chunk(len(images), block_elements)
    for start in range(0, len(texts), step):
        stop = min(start + step, len(texts))
        scores = texts[start:stop] @ images.T  # [chunk, n_images]
        own = scores[torch.arange(stop - start), owner[start:stop]][:, None]
        beaten = (scores > own + tol).any(1)
        tied = ((scores - own).abs() <= tol).sum(1).double()
        expected[start:stop] = torch.where(beaten, 0.0, 1.0 / tied)
    return expected


@torch.no_grad()
def i2t_expected_hits(images: torch.Tensor, texts: torch.Tensor, owner: torch.Tensor, tol: float = TIE_TOLERANCE,
                      block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """Per image with texts, the chance (0..1) that one of its texts is first: 0 if a wrong
    text scores more than `tol` above its best own text, else the share of its own texts
    among the texts within `tol` of that best."""
    has_text = torch.zeros(len(images), dtype=torch.bool)
    has_text[owner] = True
    expected = torch.empty(len(images), dtype=torch.float64)
    step = _chunk(len(texts), block_elements)
    for start in range(0, len(images), step):
        stop = min(start + step, len(images))
        scores = images[start:stop] @ texts.T  # [chunk, n_texts]
        mine = owner[None, :] == torch.arange(start, stop)[:, None]
        best_own = scores.masked_fill(~mine, float("-inf")).amax(1, keepdim=True)
        beaten = (scores.masked_fill(mine, float("-inf")) > best_own + tol).any(1)
        tied = (scores - best_own).abs() <= tol
        share = (tied & mine).sum(1).double() / tied.sum(1).clamp(min=1).double()
        expected[start:stop] = torch.where(beaten, 0.0, share)
    return expected[has_text]
