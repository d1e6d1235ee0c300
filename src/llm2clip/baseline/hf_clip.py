"""The paper's baseline: an original CLIP/SigLIP model with its own text tower (Table 2's
"before" rows). Captions longer than the text tower's positions (77 for CLIP, 64 for
SigLIP) are truncated, as the original model has to, and counted for the report."""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..text_embeddings import TextEmbeddings
from ..vision.hf_tower import load_pil_processor
from .text_side import TwoTowerTextSide
from .text_tower import count_truncated


class HFClipBaseline(TwoTowerTextSide, nn.Module):
    """Both towers of an HF CLIP/SigLIP model; its text side is a text encoder
    (text/protocol.py: `dim`, `max_tokens`, `identity()`, `encode`)."""

    def __init__(self, model: nn.Module, tokenizer, processor, source: str | os.PathLike | None = None):
        super().__init__()
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.source = None if source is None else str(source)
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        # SigLIP was trained on text padded to its full length; CLIP pools at the EOS token
        self.padding = "max_length" if model.config.model_type == "siglip" else True

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> "HFClipBaseline":
        from transformers import AutoConfig, AutoTokenizer, CLIPModel, SiglipModel

        from ..safe_loading import require_safetensors

        require_safetensors(source)
        kind = AutoConfig.from_pretrained(source).model_type
        if kind not in ("clip", "siglip"):
            raise ValueError(f"{source}: a {kind!r} model is not a CLIP or SigLIP model (needs both towers)")
        model_cls = CLIPModel if kind == "clip" else SiglipModel
        return cls(model_cls.from_pretrained(source, use_safetensors=True), AutoTokenizer.from_pretrained(source),
                   load_pil_processor(source), source)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_image(self, images) -> torch.Tensor:
        pixels = images if torch.is_tensor(images) else self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        return F.normalize(_features(self.model.get_image_features(pixel_values=pixels.to(self.device))), dim=-1)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def identity(self) -> dict:
        return {"hf_clip": self.source, "max_text_tokens": self.max_text_tokens}

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts -> the text tower's input, cut at its positions."""
        batch = self.tokenizer(list(texts), truncation=True, max_length=self.max_text_tokens, padding=self.padding,
                               return_tensors="pt")
        return {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}

    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        features = self.model.get_text_features(input_ids=input_ids.to(self.device), attention_mask=None
                                                if attention_mask is None else attention_mask.to(self.device))
        return F.normalize(_features(features), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> TextEmbeddings:
        """Texts -> normalised [N, embed_dim] rows, with how many were cut at `max_text_tokens`."""
        texts = list(texts)
        chunks = [self.encode_tokens(**self.tokenize(texts[start:start + batch_size]))
                  for start in range(0, len(texts), batch_size)]
        embeddings = torch.cat(chunks) if chunks else torch.empty(0, self.embed_dim)
        return TextEmbeddings.of(embeddings, count_truncated(self.tokenizer, texts, self.max_text_tokens))

def _features(output) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output holds the projected features."""
    return output if torch.is_tensor(output) else output.pooler_output
