"""LLM2CLIP: a CLIP vision tower + adaptor over a frozen LLM caption encoder.

    image  -> vision tower -> projection (re-initialised, width -> embed_dim) -> L2 norm
    text   -> caption encoder (stage-1 LLM, frozen) -> adaptor (-> embed_dim)  -> L2 norm
    logits =  exp(logit_scale) * image @ text.T  (+ logit_bias for the sigmoid loss)

A saved folder holds `llm2clip.json` (the config), `model.safetensors` (projection,
adaptor, logit scale/bias), `vision/` (the tuned tower in its own HF format, loadable
by LLaVA-style consumers as it is) and, when the model has one, `caption_encoder/` (a
stage-1 folder) — so `from_pretrained(dir)` alone gives a working retrieval model.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from .adaptor import build_adaptor
from .atomic_file import atomic_write_bytes, atomic_write_text
from .vision import load_vision_tower

CONFIG_FILE = "llm2clip.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class LLM2CLIPConfig:
    vision: str  # tower name/id/folder it was built from (informational once saved)
    text_dim: int  # caption-embedding width (LLM hidden size, + CLIP text width for method d)
    embed_dim: int = 1280
    adaptor: dict[str, Any] = field(default_factory=lambda: {"kind": "mlp", "num_blocks": 4, "expansion": 2})
    logit_scale_init: float = 1 / 0.07
    logit_bias_init: float | None = None  # set (e.g. -10) to train with the sigmoid loss
    max_logit_scale: float = 100.0
    caption_encoder: str | None = None  # where the text side came from (informational)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LLM2CLIPConfig":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown LLM2CLIP config key(s) {unknown}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


class LLM2CLIP(nn.Module):
    def __init__(self, config: LLM2CLIPConfig, vision_tower: nn.Module | None = None, caption_encoder=None):
        super().__init__()
        self.config = config
        self.vision = vision_tower if vision_tower is not None else load_vision_tower(config.vision)
        self.projection = nn.Linear(self.vision.width, config.embed_dim, bias=False)
        nn.init.normal_(self.projection.weight, std=self.vision.width ** -0.5)
        adaptor = dict(config.adaptor)
        self.adaptor = build_adaptor(adaptor.pop("kind", "mlp"), config.text_dim, config.embed_dim, **adaptor)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        bias = config.logit_bias_init
        self.logit_bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None
        self.set_caption_encoder(caption_encoder)

    @property
    def caption_encoder(self):
        return self.__dict__["_caption_encoder"][0]

    def set_caption_encoder(self, encoder) -> None:
        """Attach the (frozen) caption encoder. Kept out of the module tree on purpose:
        its weights are not LLM2CLIP's to save, train or move (it has its own folder)."""
        self.__dict__["_caption_encoder"] = [encoder]

    # ----------------------------------------------------------------- encoding
    def encode_image(self, images) -> torch.Tensor:
        """A list of PIL images (preprocessed by the tower's own processor) or a pixel tensor."""
        pixels = images if torch.is_tensor(images) else self.vision.preprocess(list(images))
        pixels = pixels.to(self.projection.weight.device)
        return F.normalize(self.projection(self.vision(pixels)), dim=-1)

    def project_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """The projection on the tower's pooled features [N, width] (cached features of a frozen tower)."""
        weight = self.projection.weight
        return F.normalize(self.projection(features.to(weight.device, weight.dtype)), dim=-1)

    def encode_text_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The adaptor on precomputed caption-encoder embeddings [N, text_dim]."""
        if embeddings.shape[-1] != self.config.text_dim:
            raise ValueError(f"text embeddings have dimension {embeddings.shape[-1]}, "
                             f"this model expects {self.config.text_dim}")
        weight = self.projection.weight
        return F.normalize(self.adaptor(embeddings.to(weight.device, weight.dtype)), dim=-1)

    def encode_text(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        if self.caption_encoder is None:
            raise ValueError("this model has no caption encoder: load one, or use encode_text_embeddings")
        return self.encode_text_embeddings(self.caption_encoder.encode(list(texts), batch_size=batch_size))

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped to max_logit_scale (CLIP's 100)."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def clamp_logit_scale(self) -> None:
        """Keep the stored parameter in range too, so the optimiser cannot run it away."""
        with torch.no_grad():
            self.logit_scale.clamp_(max=math.log(self.config.max_logit_scale))

    # ----------------------------------------------------------------- saving
    def head_state(self) -> dict[str, torch.Tensor]:
        """Everything but the tower: projection, adaptor, logit scale/bias."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("vision.")}

    def save_pretrained(self, directory: str | os.PathLike, save_caption_encoder: bool = True) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.vision.save_pretrained(directory / "vision")
        state = {k: v.detach().contiguous().cpu() for k, v in self.head_state().items()}
        atomic_write_bytes(directory / WEIGHTS_FILE, save(state))
        if save_caption_encoder and self.caption_encoder is not None:
            self.caption_encoder.save_pretrained(directory / "caption_encoder")
        atomic_write_text(directory / CONFIG_FILE, json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, load_caption_encoder: bool = True,
                        device: str | torch.device | None = None) -> "LLM2CLIP":
        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"{directory}: not an LLM2CLIP folder (no {CONFIG_FILE})")
        config = LLM2CLIPConfig.from_dict(json.loads(config_file.read_text(encoding="utf-8")))
        encoder = None
        if load_caption_encoder and (directory / "caption_encoder").is_dir():
            from .text import load_caption_encoder

            encoder = load_caption_encoder(directory / "caption_encoder", device=device)
            encoder.requires_grad_(False).eval()
        model = cls(config, load_vision_tower(directory / "vision"), encoder)
        state = load_file(str(directory / WEIGHTS_FILE))
        expected = set(model.head_state())
        if set(state) != expected:
            raise ValueError(f"{directory / WEIGHTS_FILE}: tensors {sorted(set(state) ^ expected)[:5]} "
                             "do not match the config")
        model.load_state_dict(state, strict=False)
        return model.to(device) if device is not None else model

    def export_vision_tower(self, directory: str | os.PathLike) -> None:
        """The tuned tower alone, in its own format (an HF vision-model folder for CLIP/SigLIP)."""
        self.vision.save_pretrained(directory)

