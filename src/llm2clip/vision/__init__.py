"""Vision towers: HF CLIP/SigLIP (any checkpoint); timm EVA02 behind the `timm` extra."""
from __future__ import annotations

import os

from .hf_tower import HFVisionTower


def load_vision_tower(source: str | os.PathLike):
    """A tower by HF id or folder (CLIP or SigLIP vision model, or a full CLIP/SigLIP model)."""
    return HFVisionTower.from_pretrained(source)


__all__ = ["HFVisionTower", "load_vision_tower"]
