"""The stage-2 objective as one module (one forward per micro-step, as DDP requires).

Offline: the batch carries precomputed caption embeddings; the LLM is never loaded.
Online (frozen or LoRA): the batch carries tokenised captions and the caption encoder
runs in the loop — without gradients when frozen, so both give the same numbers and
the store is a pure speed-up. Either way the loss sums one contrastive term per trained
term of the model (multi_encoder.py).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ..losses import LOSSES
from ..model import LLM2CLIP


class Stage2Objective(nn.Module):
    def __init__(self, model: LLM2CLIP, loss: str = "clip", caption_encoder: nn.Module | None = None,
                 train_encoder: bool = False):
        super().__init__()
        self.model = model
        self.loss = loss
        self.caption_encoder = caption_encoder  # online modes only
        self.train_encoder = train_encoder

    def caption_embeddings(self, text_batch: dict[str, torch.Tensor]) -> torch.Tensor:
        grad = nullcontext() if self.train_encoder else torch.no_grad()
        with grad:
            return self.caption_encoder(**text_batch).float()

    def forward(self, pixels: torch.Tensor | None = None, text_embeddings: torch.Tensor | None = None,
                text_batch: dict[str, torch.Tensor] | None = None,
                image_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`pixels`, or `image_features` a frozen tower computed once; `text_embeddings` from
        the store, or `text_batch` for the caption encoder in the loop.

        The loss is the sum of one contrastive loss per trained term (one for method (a),
        CL(LLM,V) + CL(CLIP-T,V) + CL(Cat,V) for method (d)); with several terms each is
        also returned as `loss_<term>`, detached, for the log."""
        if text_embeddings is None:
            text_embeddings = self.caption_embeddings(text_batch)
        if image_features is None:
            image_features = self.model.vision(pixels.to(self.model.projection.weight.device))
        terms = {term: self.term_loss(term, first, second)
                 for term, (first, second) in self.model.term_pairs(image_features, text_embeddings).items()}
        out = {"loss": sum(terms.values()), "logit_scale": self.model.scale().detach()}
        if len(terms) > 1:
            out.update({f"loss_{term}": loss.detach() for term, loss in terms.items()})
        return out

    def term_loss(self, term: str, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """One term's contrastive loss between its two spaces (image and text for Table 10's a-d)."""
        loss = LOSSES[self.loss]
        return loss.fn(first, second, self.model.scale(term), self.model.bias(term) if loss.learns_bias else None)
