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
from .grad_cache import split_rows


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
        inputs = {"pixels": pixels, "text_embeddings": text_embeddings, "text_batch": text_batch,
                  "image_features": image_features}
        return self.contrast(self.embed(inputs), inputs)

    # ---------------------------------------------------------- in pieces, for GradCache (grad_cache.py)
    def split(self, inputs: dict, pieces: int) -> list[dict]:
        """The batch's samples in `pieces` consecutive micro-batches."""
        return split_rows(inputs, pieces)

    def precompute(self, chunk: dict) -> dict:
        """The frozen parts of a micro-batch, computed once (GradCache's first pass): the
        caption embeddings of a frozen encoder, the features of a wholly frozen tower."""
        chunk = dict(chunk)
        if chunk.get("text_batch") is not None and not self.train_encoder:
            chunk["text_embeddings"] = self.caption_embeddings(chunk.pop("text_batch"))
        if chunk.get("pixels") is not None and not any(p.requires_grad for p in self.model.vision.parameters()):
            chunk["image_features"] = self.model.vision(chunk.pop("pixels").to(self.model.projection.weight.device))
        return chunk

    def embed(self, chunk: dict) -> list[torch.Tensor]:
        """Each trained term's two spaces for the micro-batch's rows: [first, second, first, ...]."""
        text = chunk.get("text_embeddings")
        if text is None:
            text = self.caption_embeddings(chunk["text_batch"])
        image = chunk.get("image_features")
        if image is None:
            image = self.model.vision(chunk["pixels"].to(self.model.projection.weight.device))
        return [space for pair in self.model.term_pairs(image, text).values() for space in pair]

    def contrast(self, embeddings: list[torch.Tensor], inputs: dict) -> dict[str, torch.Tensor]:
        """The whole batch's loss from `embed`'s spaces (each gathered across ranks by the loss)."""
        spaces = iter(embeddings)
        terms = {term: self.term_loss(term, next(spaces), next(spaces)) for term in self.model.config.loss_terms}
        out = {"loss": sum(terms.values()), "logit_scale": self.model.scale().detach()}
        if len(terms) > 1:
            out.update({f"loss_{term}": loss.detach() for term, loss in terms.items()})
        return out

    def chunk_terms(self, chunk: dict, inputs: dict) -> dict[str, torch.Tensor]:
        return {}  # every term is contrastive

    def term_loss(self, term: str, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """One term's contrastive loss between its two spaces (image and text for Table 10's a-d)."""
        loss = LOSSES[self.loss]
        return loss.fn(first, second, self.model.scale(term), self.model.bias(term) if loss.learns_bias else None)
