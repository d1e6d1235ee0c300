"""Vision towers from transformers: CLIPVisionModel and SiglipVisionModel, any checkpoint.

Pooled features: CLIP's post-layernorm CLS token, SigLIP's attention-pooling head.
Preprocessing uses the checkpoint's own image processor in its PIL backend (no
torchvision). `save_pretrained` writes a plain HF folder (model + processor), which is
what LLaVA-style consumers load.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import nn

SUPPORTED = ("clip_vision_model", "siglip_vision_model", "clip", "siglip")


class HFVisionTower(nn.Module):
    def __init__(self, model: nn.Module, processor):
        super().__init__()
        self.model = model
        self.processor = processor

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> "HFVisionTower":
        from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel

        config = AutoConfig.from_pretrained(source)
        kind = config.model_type
        if kind not in SUPPORTED:
            raise ValueError(f"{source}: a {kind!r} model is not a supported vision tower "
                             f"(CLIP or SigLIP vision models)")
        model_cls = CLIPVisionModel if kind.startswith("clip") else SiglipVisionModel
        model = model_cls.from_pretrained(source)  # a full CLIPModel folder loads its vision half
        return cls(model, _load_processor(source))

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).pooler_output

    def preprocess(self, images: list) -> torch.Tensor:
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters from input to output: embeddings, each encoder layer, the rest."""
        vision = getattr(self.model, "vision_model", self.model)  # transformers 5 flattened some
        layers = [list(layer.parameters()) for layer in vision.encoder.layers]
        seen = {id(p) for group in layers for p in group} | {id(p) for p in vision.embeddings.parameters()}
        pre = list(vision.embeddings.parameters()) + list(getattr(vision, "pre_layrnorm", nn.Identity()).parameters())
        seen |= {id(p) for p in pre}
        rest = [p for p in self.model.parameters() if id(p) not in seen]
        return [pre] + layers + [rest]

    def gradient_checkpointing_enable(self) -> None:
        self.model.gradient_checkpointing_enable()

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)


def _load_processor(source):
    from transformers import AutoImageProcessor

    with warnings.catch_warnings():  # "requires torchvision; falling back to the PIL backend"
        warnings.simplefilter("ignore")
        return AutoImageProcessor.from_pretrained(source)
