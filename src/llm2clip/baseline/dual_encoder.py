"""DualEncoder: frozen pretrained image and text towers, aligned by two linear projections
and a logit scale (LiT-style with both towers locked). Cheap to train on a CPU because
the towers' features can be computed once; used by the demo as the "pretrained CLIP"
whose text side is a conventional tower cut at 77 tokens.

Folder format: `dual_encoder.json` (tower sources, token limit, embed_dim, training
summary) + `heads.safetensors` (the projections and logit scale). The towers are frozen,
so the folder names them (an embedded short name, an HF id or a folder) rather than
copying them.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from ..atomic_file import atomic_write_bytes, atomic_write_text
from ..text_embeddings import TextEmbeddings
from ..vision import load_vision_tower
from .text_side import TwoTowerTextSide
from .text_tower import CLIP_TEXT_TOKENS, EMBEDDED_MINILM, SentenceTextTower

CONFIG_FILE = "dual_encoder.json"
WEIGHTS_FILE = "heads.safetensors"


class DualEncoder(TwoTowerTextSide, nn.Module):
    def __init__(self, image_tower: str = "efficientnet-lite0", text_tower: str = EMBEDDED_MINILM,
                 embed_dim: int = 256, max_text_tokens: int = CLIP_TEXT_TOKENS, logit_scale_init: float = 1 / 0.07,
                 info: dict | None = None):
        super().__init__()
        self.sources = {"image_tower": str(image_tower), "text_tower": str(text_tower)}
        self.info = dict(info or {})
        self.image_tower = load_vision_tower(image_tower).requires_grad_(False).eval()
        self.text_tower = SentenceTextTower(text_tower, max_text_tokens).requires_grad_(False).eval()
        self.image_projection = nn.Linear(self.image_tower.width, embed_dim, bias=False)
        self.text_projection = nn.Linear(self.text_tower.width, embed_dim, bias=False)
        for projection in (self.image_projection, self.text_projection):
            nn.init.normal_(projection.weight, std=projection.in_features ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    def train(self, mode: bool = True) -> "DualEncoder":
        """Only the heads ever train: the towers stay in eval mode (frozen BatchNorm, no dropout)."""
        super().train(mode)
        self.image_tower.eval()
        self.text_tower.eval()
        return self

    # ----------------------------------------------------------------- the towers
    @property
    def embed_dim(self) -> int:
        return self.image_projection.out_features

    @property
    def max_text_tokens(self) -> int:
        return self.text_tower.max_tokens

    # the text side as a text encoder (text/protocol.py, text_side.py): the projected, normalised rows
    def identity(self) -> dict:
        return {**self.sources, "embed_dim": self.embed_dim, "max_text_tokens": self.max_text_tokens}

    @torch.no_grad()
    def image_features(self, images) -> torch.Tensor:
        """A list of PIL images or a pixel tensor -> the frozen tower's pooled features."""
        pixels = images if torch.is_tensor(images) else self.image_tower.preprocess(list(images))
        return self.image_tower(pixels.to(self.image_projection.weight.device))

    @torch.no_grad()
    def text_features(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> TextEmbeddings:
        """The frozen text tower's features on the heads' device, with how many texts it cut
        at `max_text_tokens`."""
        features = self.text_tower.encode(texts, batch_size, show_progress)
        return TextEmbeddings.of(features.embeddings.to(self.text_projection.weight.device), features.truncated)

    # ----------------------------------------------------------------- the model
    def project_images(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_projection(features), dim=-1)

    def project_texts(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(features), dim=-1)

    def encode_image(self, images) -> torch.Tensor:
        return self.project_images(self.image_features(images))

    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> TextEmbeddings:
        """Texts -> normalised [N, embed_dim] rows, with how many were cut at `max_text_tokens`."""
        features = self.text_features(texts, batch_size)
        return TextEmbeddings.of(self.project_texts(features.embeddings), features.truncated)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.text_tower.tokenize(texts)

    def encode_tokens(self, **tokens: torch.Tensor) -> torch.Tensor:
        """A batch from `tokenize` -> normalised text embeddings (what encode_text gives)."""
        return self.project_texts(self.text_tower.features(**tokens))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=100.0)

    # ----------------------------------------------------------------- saving
    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()
                if not k.startswith(("image_tower.", "text_tower."))}

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / WEIGHTS_FILE, save(self.head_state()))
        config = {**self.sources, "embed_dim": self.embed_dim, "max_text_tokens": self.max_text_tokens,
                  "info": self.info}
        atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")  # last: marks it complete

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "DualEncoder":
        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"{directory}: not a DualEncoder folder (no {CONFIG_FILE})")
        config = json.loads(config_file.read_text(encoding="utf-8"))
        model = cls(config["image_tower"], config["text_tower"], config["embed_dim"], config["max_text_tokens"],
                    info=config.get("info"))
        state = load_file(str(directory / WEIGHTS_FILE))
        expected = set(model.head_state())
        if set(state) != expected:
            raise ValueError(f"{directory / WEIGHTS_FILE}: tensors {sorted(set(state) ^ expected)} do not match")
        model.load_state_dict(state, strict=False)
        return model
