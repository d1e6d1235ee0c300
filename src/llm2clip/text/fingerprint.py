"""Hashing an encoder's weights and settings: the `weights_fingerprint` of its identity.

Tensors are hashed by name, shape and float32 value: the storage dtype is not part of the
identity, because peft upcasts a saved bf16 adapter to float32 on load and the numbers it
computes with are the same.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch


def canonical_json(value: Any) -> str:
    """One spelling per value (sorted keys, no spaces): what identities are hashed as."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint_tensors(settings: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex digest over the settings and each tensor's name, shape and float32 bytes.

    `tensors` is read one tensor at a time, in name order, so a lazy mapping over files
    never holds more than one tensor in memory.
    """
    digest = hashlib.sha256(canonical_json(dict(settings)).encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        array = tensor.contiguous().numpy()
        digest.update(f"\n{name}|{list(array.shape)}|{array.dtype.str}\n".encode("utf-8"))
        digest.update(array.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


class SafetensorsTensors(Mapping):
    """The tensors of some safetensors files as a lazy name -> tensor mapping."""

    def __init__(self, files: list[Path]):
        from safetensors import safe_open

        self._where: dict[str, Path] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                self._where.update({name: file for name in handle.keys()})

    def __getitem__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._where[name]), framework="pt") as handle:
            return handle.get_tensor(name)

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)
