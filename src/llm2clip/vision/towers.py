"""What every vision tower is: the interface, a PIL+numpy image transform, and the folder format.

A tower maps a pixel batch [B, 3, H, W] to pooled features [B, width]; the model puts its
own projection (re-initialised to embed_dim, as the paper does) after it. Besides the
forward pass a tower knows how to preprocess PIL images the way it was pretrained, how to
split its parameters into depth-ordered groups for layer-wise lr decay, and how to save
itself. HF towers save as plain HF folders (so LLaVA-style code can load them); the
others save `vision_tower.json` (which kind, and its settings) + `model.safetensors`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from .image_loading import to_rgb

TOWER_CONFIG = "vision_tower.json"
TOWER_WEIGHTS = "model.safetensors"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
             "lanczos": Image.LANCZOS}


class VisionTower(nn.Module):
    """The interface; subclasses implement every method."""

    kind: str = ""  # the name written to vision_tower.json

    @property
    def width(self) -> int:
        """Size of the pooled feature vector."""
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] pixels (as `preprocess` makes them) -> [B, width] pooled features."""
        raise NotImplementedError

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images of any size and mode -> a float32 pixel batch for `forward`."""
        raise NotImplementedError

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Every parameter exactly once, grouped from the input side to the output side
        (embeddings/stem, each block, final norm/head), for layer-wise lr decay."""
        raise NotImplementedError

    def gradient_checkpointing_enable(self) -> None:
        raise NotImplementedError

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> "VisionTower":
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


@dataclass
class ImageTransform:
    """ImageNet-style evaluation transform in PIL + numpy (no torchvision): resize the
    shorter side to floor(size / crop_pct), centre-crop size x size, scale to [0, 1],
    subtract `mean`, divide by `std`. Transparent images are composited on white."""

    size: int = 224
    crop_pct: float = 0.875
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    interpolation: str = "bicubic"

    def __post_init__(self):
        self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if isinstance(images, Image.Image):
            images = [images]
        arrays = np.stack([self.pixels(image) for image in images])
        return torch.from_numpy(arrays.transpose(0, 3, 1, 2).copy())

    def pixels(self, image: Image.Image) -> np.ndarray:
        """One image -> normalised float32 [size, size, 3]."""
        image = self.resize_and_crop(to_rgb(image))
        values = np.asarray(image, dtype=np.float32) / 255.0
        return (values - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        shorter = math.floor(self.size / self.crop_pct)
        scale = shorter / min(image.size)
        # max(.., size): a very elongated image must still cover the crop on its long side
        new_size = tuple(max(self.size, round(side * scale)) for side in image.size)
        image = image.resize(new_size, _RESAMPLE[self.interpolation])
        left, top = (new_size[0] - self.size) // 2, (new_size[1] - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

    def to_dict(self) -> dict:
        return {"size": self.size, "crop_pct": self.crop_pct, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation}


def group_parameters(module: nn.Module, group_of: Callable[[str], int], num_groups: int) -> list[list[nn.Parameter]]:
    """Split `module`'s parameters into `num_groups` ordered groups by name. Parameters
    shared between names (tied weights) are counted once, at their first name."""
    groups: list[list[nn.Parameter]] = [[] for _ in range(num_groups)]
    for name, param in module.named_parameters():  # named_parameters already skips duplicates
        groups[group_of(name)].append(param)
    return groups


def write_tower_folder(directory: str | os.PathLike, config: dict, state: dict[str, torch.Tensor]) -> None:
    """`vision_tower.json` + `model.safetensors` (tensors made contiguous, on the CPU)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}
    save_file(tensors, str(directory / TOWER_WEIGHTS))
    (directory / TOWER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def read_tower_config(directory: str | os.PathLike) -> dict | None:
    """The folder's vision_tower.json, or None when there is none (e.g. an HF folder)."""
    path = Path(directory) / TOWER_CONFIG
    if not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"{path}: not a vision-tower config (no 'kind')")
    return config


def read_tower_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(directory) / TOWER_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: vision tower folder without {TOWER_WEIGHTS}")
    return load_file(str(path))


def load_state_exactly(module: nn.Module, state: dict[str, torch.Tensor], source) -> None:
    """load_state_dict(strict=True) with an error that names the folder."""
    missing, unexpected = module.state_dict().keys() - state.keys(), state.keys() - module.state_dict().keys()
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not match the architecture "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    module.load_state_dict(state, strict=True)
