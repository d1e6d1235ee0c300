"""Vision towers: HF CLIP/SigLIP (any checkpoint), the embedded EfficientNet-Lite0, and
timm towers such as EVA02 behind the `timm` extra. `load_vision_tower` picks the kind."""
from __future__ import annotations

import os
from pathlib import Path

from .efficientnet_tower import EfficientNetLite0Tower, imagenet_classifier
from .hf_tower import HFVisionTower
from .image_loading import ImageError, load_image
from .timm_tower import TimmVisionTower
from .towers import ImageTransform, VisionTower, read_tower_config

# kind -> tower class: the one list of non-HF towers. A saved folder's `vision_tower.json`
# names its kind here; a source equal to a kind ("efficientnet-lite0": the embedded weights)
# or starting with "<kind>:" ("timm:<model name>") goes to that class's `from_pretrained`.
TOWERS = {
    EfficientNetLite0Tower.kind: EfficientNetLite0Tower,
    TimmVisionTower.kind: TimmVisionTower,
}


def load_vision_tower(source: str | os.PathLike) -> VisionTower:
    """A tower from, in this order of precedence:
    - a folder saved by a non-HF tower (it has `vision_tower.json` naming a kind of TOWERS);
    - a kind of TOWERS, or "<kind>:<model>": "efficientnet-lite0", "timm:<model name>"
      (needs the `timm` extra);
    - an HF id or folder of a CLIP/SigLIP vision model or full CLIP/SigLIP model."""
    config = read_tower_config(source) if Path(source).is_dir() else None
    if config is not None:
        if config["kind"] not in TOWERS:
            raise ValueError(f"{source}: unknown vision tower kind {config['kind']!r}; known: {sorted(TOWERS)}")
        return TOWERS[config["kind"]].from_pretrained(source)
    name = str(source)
    kind = name.split(":", 1)[0]
    if kind in TOWERS:
        return TOWERS[kind].from_pretrained(name)
    return HFVisionTower.from_pretrained(source)


__all__ = ["TOWERS", "VisionTower", "HFVisionTower", "EfficientNetLite0Tower", "TimmVisionTower", "ImageTransform",
           "ImageError", "load_image", "load_vision_tower", "imagenet_classifier"]
