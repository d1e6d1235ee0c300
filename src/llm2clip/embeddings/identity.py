"""The identity of a caption encoder: everything its embeddings are a function of.

A store records the identity of the encoder that wrote it, and stage 2 refuses a store
whose identity differs from the caption encoder it is told to use — otherwise embeddings
of one model would silently be trained against as if they were another's.

identity = the encoder's settings (`CaptionEncoder.identity()`: base model, pooling,
attention, instruction, max length) + `weights_fingerprint`: a sha256 over the settings
and the weights that differ from the base model (the LoRA tensors, or all tensors of a
full model). Tensors are hashed by name, shape and float32 value: the storage dtype is
not part of the identity, because peft upcasts a saved bf16 adapter to float32 on load
and the numbers it computes with are the same.

`expected_identity_of_folder` computes the identity of a saved stage-1 folder from its
files, so offline stage 2 can check a store without loading the LLM.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

FINGERPRINT_KEY = "weights_fingerprint"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SETTINGS_FILE = "caption_encoder.json"  # as written by CaptionEncoder.save_pretrained


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


def store_identity(encoder) -> dict[str, Any]:
    """The identity a store written by `encoder` records."""
    return {**encoder.identity(), FINGERPRINT_KEY: encoder.weights_fingerprint()}


def identity_digest(identity: Mapping[str, Any]) -> str:
    """A short stable digest of a whole identity (what each shard is stamped with)."""
    return hashlib.sha256(canonical_json(dict(identity)).encode("utf-8")).hexdigest()[:32]


def identity_differences(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """`key: found != expected` for every key whose value differs (or is missing on one side)."""
    missing = object()
    lines = []
    for key in sorted(set(found) | set(expected)):
        a, b = found.get(key, missing), expected.get(key, missing)
        if a != b:
            show = lambda v: "(absent)" if v is missing else repr(v)  # noqa: E731
            lines.append(f"{key}: store has {show(a)}, expected {show(b)}")
    return lines


def expected_identity_of_folder(path: str) -> dict[str, Any]:
    """The identity `store_identity(CaptionEncoder.from_pretrained(path))` would give.

    A folder saved by `CaptionEncoder.save_pretrained` is read from its files (settings +
    adapter or model safetensors), without loading the LLM. Anything else (a concat-encoder
    folder, a base LLM's name or folder) is loaded to tell.
    """
    folder = Path(path)
    settings_file = folder / SETTINGS_FILE
    if not settings_file.is_file():
        return _identity_by_loading(path)
    from ..text.settings import EncoderSettings

    saved = json.loads(settings_file.read_text(encoding="utf-8"))
    fmt = saved.pop("format", None)
    settings = EncoderSettings(**saved).identity()  # same defaults/normalisation as loading
    if fmt == "adapter":
        files = [folder / ADAPTER_WEIGHTS] if (folder / ADAPTER_WEIGHTS).is_file() else []
    else:
        files = sorted(p for p in folder.glob("*.safetensors") if p.name != ADAPTER_WEIGHTS)
    if not files:  # e.g. weights saved as .bin: only loading tells what they are
        return _identity_by_loading(path)
    return {**settings, FINGERPRINT_KEY: fingerprint_tensors(settings, _SafetensorsTensors(files))}


def _identity_by_loading(path: str) -> dict[str, Any]:
    from ..text import load_caption_encoder

    return store_identity(load_caption_encoder(path, precision="fp32"))


class _SafetensorsTensors(Mapping):
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
