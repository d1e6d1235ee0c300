"""An adaptor on top of a caption encoder's pooled output (paper Tables 8 and 9, stage 1).

Table 9's "Frozen, Linear Adaptor" row trains only this adaptor over a frozen LLM; Table
8's stage-1 rows train it beside LoRA. It is one of `adaptor.py`'s ADAPTORS, built with
the LLM's hidden size as both its input and its output width, so the encoder's `dim` does
not change. Its options are part of the encoder's settings (`EncoderSettings.adaptor`)
and its weights are saved in the encoder folder as `adaptor.safetensors`, each tensor
named `adaptor.<name>`: the encoder identity's fingerprint hashes them with the LLM's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adaptor import build_adaptor, check_adaptor_options
from ..atomic_file import atomic_write_bytes
from .encoder_folder import ADAPTOR_FILE

PREFIX = "adaptor."


def build_encoder_adaptor(options: dict[str, Any], dim: int) -> nn.Module:
    """The adaptor `options` ({kind, ...}) describe, `dim` -> `dim`, in float32."""
    check_adaptor_options(options, "adaptor")
    options = dict(options)
    return build_adaptor(options.pop("kind", "mlp"), dim, dim, **options).float()


def adaptor_tensors(adaptor: nn.Module) -> dict[str, torch.Tensor]:
    """Its weights under the names `adaptor.safetensors` holds."""
    return {PREFIX + name: tensor for name, tensor in adaptor.state_dict().items()}


def save_adaptor(adaptor: nn.Module, directory: Path) -> None:
    from safetensors.torch import save

    tensors = {name: t.detach().cpu().contiguous() for name, t in adaptor_tensors(adaptor).items()}
    atomic_write_bytes(directory / ADAPTOR_FILE, save(tensors))


def load_adaptor(adaptor: nn.Module, directory: Path) -> None:
    """Fill `adaptor` from the folder's `adaptor.safetensors`, every tensor present."""
    from safetensors.torch import load_file

    file = directory / ADAPTOR_FILE
    if not file.is_file():
        raise ValueError(f"{directory}: the settings name an adaptor but {ADAPTOR_FILE} is missing")
    saved = {name[len(PREFIX):]: t for name, t in load_file(str(file)).items() if name.startswith(PREFIX)}
    try:
        adaptor.load_state_dict(saved, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{file}: does not fit the adaptor its settings describe: {err}") from None
