"""Which device a run uses: `auto` (CUDA when a GPU is visible, else the CPU), `cpu`, or
`cuda` - which must then exist: a run asked to use a GPU never falls back to the CPU."""
from __future__ import annotations

from .choices import DEVICES
from .config import ConfigError


def resolve_device(device: str, key: str = "device") -> str:
    """"cpu" or "cuda" for the setting `key` = `device`; a ConfigError naming the key if impossible."""
    import torch

    if device not in DEVICES:
        raise ConfigError(f"{key} {device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} is cuda, but torch sees no CUDA device on this machine; set {key} to auto or cpu")
    return device
