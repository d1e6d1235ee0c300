"""Optional: timm towers, e.g. EVA02 (the paper's EVA02-L/14 CLIP vision encoder).

Only on machines that have `pip install llm2clip[timm]`: timm pulls in torchvision, which
on the CPU machines replaces torch or breaks transformers, so nothing else imports this.
Name a tower `timm:<model name>` (e.g. `timm:eva02_large_patch14_clip_224.merged2b`);
its pretrained weights come from timm's own cache or hub, as timm decides.

The model is created with `num_classes=0`, so its forward returns the pooled, normed
features (CLS token or average, as the model defines) without a classifier or CLIP
projection. Preprocessing follows the model's timm data config (size, crop_pct, mean,
std, interpolation), reimplemented in PIL + numpy. Saved folders hold the model name,
the transform and the weights (safetensors); loading rebuilds the architecture without
downloading anything.
"""
from __future__ import annotations

import os
import re

import torch
from torch import nn

from .towers import (ImageTransform, VisionTower, group_parameters, load_state_exactly, read_tower_config,
                     read_tower_weights, write_tower_folder)

PREFIX = "timm:"
_BLOCK = re.compile(r"^(?:blocks|layers|stages)\.(\d+)\.")
_HEAD = ("norm.", "fc_norm.", "head.", "head_drop.", "attn_pool.", "final_norm.")


def _timm():
    try:
        import timm
    except ImportError as err:
        raise ImportError("timm vision towers (EVA02, ...) need the optional extra: "
                          "pip install llm2clip[timm]  (GPU machines only: it brings torchvision)") from err
    return timm


class TimmVisionTower(VisionTower):
    kind = "timm"

    def __init__(self, model_name: str, pretrained: bool = True, transform: ImageTransform | None = None):
        super().__init__()
        timm = _timm()
        self.model_name = model_name
        self.model = timm.create_model(model_name, pretrained=pretrained, num_classes=0)
        self.transform = transform or _transform_from_timm(self.model)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> "TimmVisionTower":
        """`timm:<model name>` (pretrained by timm) or a folder saved by `save_pretrained`."""
        if str(source).startswith(PREFIX):
            return cls(str(source)[len(PREFIX):])
        config = read_tower_config(source)
        if config is None or config["kind"] != cls.kind:
            raise ValueError(f"{source}: not a saved timm tower")
        tower = cls(config["model_name"], pretrained=False, transform=ImageTransform(**config["transform"]))
        load_state_exactly(tower.model, read_tower_weights(source), source)
        return tower

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        config = {"kind": self.kind, "model_name": self.model_name, "transform": self.transform.to_dict()}
        write_tower_folder(directory, config, self.model.state_dict())

    @property
    def width(self) -> int:
        return self.model.num_features

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values.to(self.dtype))

    def preprocess(self, images) -> torch.Tensor:
        return self.transform(images)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Stem (patch embedding, cls/pos tokens), each block, head (norms, pooling)."""
        names = [name for name, _ in self.model.named_parameters()]
        depths = [int(m.group(1)) for m in map(_BLOCK.match, names) if m]
        blocks = max(depths) + 1 if depths else 0

        def group_of(name: str) -> int:
            match = _BLOCK.match(name)
            if match:
                return 1 + int(match.group(1))
            return blocks + 1 if name.startswith(_HEAD) else 0

        return group_parameters(self.model, group_of, blocks + 2)

    def gradient_checkpointing_enable(self) -> None:
        self.model.set_grad_checkpointing(True)


def _transform_from_timm(model: nn.Module) -> ImageTransform:
    from timm.data import resolve_model_data_config

    data = resolve_model_data_config(model)
    _, height, width = data["input_size"]
    if height != width:
        raise ValueError(f"non-square timm input size {data['input_size']} is not supported")
    return ImageTransform(size=height, crop_pct=data.get("crop_pct", 0.875), mean=tuple(data["mean"]),
                          std=tuple(data["std"]), interpolation=data.get("interpolation", "bicubic"))
