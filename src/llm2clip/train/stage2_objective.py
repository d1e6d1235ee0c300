"""The stage-2 objective as one module (one forward per micro-step, as DDP requires).

Offline: the batch carries precomputed caption embeddings; the LLM is never loaded.
Online (frozen or LoRA): the batch carries tokenised captions and the caption encoder
runs in the loop — without gradients when frozen, so both give the same numbers and
the store is a pure speed-up.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ..losses import clip_loss, siglip_loss
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
        the store, or `text_batch` for the caption encoder in the loop."""
        if text_embeddings is None:
            text_embeddings = self.caption_embeddings(text_batch)
        if image_features is not None:
            image = self.model.project_image_features(image_features)
        else:
            image = self.model.encode_image(pixels)
        text = self.model.encode_text_embeddings(text_embeddings)
        scale = self.model.scale()
        if self.loss == "siglip":
            loss = siglip_loss(image, text, scale, self.model.logit_bias)
        else:
            loss = clip_loss(image, text, scale)
        return {"loss": loss, "logit_scale": scale.detach()}
