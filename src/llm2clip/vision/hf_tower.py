"""Vision towers from transformers: CLIPVisionModel and SiglipVisionModel, any checkpoint.

Pooled features: CLIP's post-layernorm CLS token (`pooler_output`, before CLIP's visual
projection, which the LLM2CLIP model replaces), SigLIP's attention-pooling head. A full
CLIPModel/SiglipModel checkpoint loads its vision half. Preprocessing uses the
checkpoint's own image processor with the PIL backend: transformers 5 prefers a
torchvision backend when one is installed, and we never depend on torchvision.
`save_pretrained` writes a plain HF folder (model + processor), which is what LLaVA-style
consumers load.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from .towers import VisionTower

SUPPORTED = ("clip_vision_model", "siglip_vision_model", "clip", "siglip")


class HFVisionTower(VisionTower):
    kind = "hf"

    def __init__(self, model: nn.Module, processor):
        super().__init__()
        self.model = model
        self.processor = processor

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> "HFVisionTower":
        from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel

        from ..safe_loading import require_safetensors

        require_safetensors(source)
        config = AutoConfig.from_pretrained(source)
        kind = config.model_type
        if kind not in SUPPORTED:
            raise ValueError(f"{source}: a {kind!r} model is not a supported vision tower "
                             f"(CLIP or SigLIP vision models, 'efficientnet-lite0', 'timm:<name>')")
        model_cls = CLIPVisionModel if kind.startswith("clip") else SiglipVisionModel
        model = model_cls.from_pretrained(source, use_safetensors=True)  # a full CLIP/SigLIP folder loads its vision half
        return cls(model, load_pil_processor(source))

    @property
    def vision(self) -> nn.Module:
        """The transformer inside (`vision_model`) that holds embeddings/encoder/head."""
        return getattr(self.model, "vision_model", self.model)

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values.to(self.dtype)).pooler_output

    def preprocess(self, images) -> torch.Tensor:
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embeddings (+ CLIP's pre-layernorm), each encoder layer, then everything else
        (post-layernorm, SigLIP's pooling head)."""
        vision = self.vision
        first = list(vision.embeddings.parameters())
        first += list(getattr(vision, "pre_layrnorm", nn.Identity()).parameters())  # sic: HF's name
        layers = [list(layer.parameters()) for layer in vision.encoder.layers]
        placed = {id(p) for group in [first, *layers] for p in group}
        rest = [p for p in self.model.parameters() if id(p) not in placed]
        return [first, *layers, rest]

    def gradient_checkpointing_enable(self) -> None:
        self.model.activation_checkpointing_enable()  # transformers 5's name; non-reentrant

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)


def load_pil_processor(source):
    """The checkpoint's image processor, PIL backend (never the torchvision one)."""
    from transformers import AutoImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoImageProcessor.from_pretrained(source, backend="pil")
