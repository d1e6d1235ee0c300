"""Cached benchmark embeddings: a second evaluation of the same model is fast.

One safetensors file per (model, benchmark side), named by a digest of the model's
fingerprint and the exact inputs, in order: caption texts, or image paths *with the
sha256 of each image's bytes*. Anything that changes either gives a new name, so a stale
file is never read. Written atomically.

Why a content hash and not (size, mtime): an image replaced in place can keep both (a
file of the same size rewritten within one timestamp tick, `cp -p`, `rsync -a`, `tar x`),
and a stale cache gives wrong numbers with no error. Hashing reads each image once more,
which costs far less than decoding and encoding it (see docs/reliability.md).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..atomic_file import atomic_write_bytes

log = logging.getLogger("llm2clip.eval")


class EmbeddingCache:
    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None  # None: caching off

    def key(self, model_fingerprint: str, side: str, inputs: Sequence[str], files: bool = False) -> str:
        """The digest naming a cache file; with `files=True` the inputs are file paths and
        each file's contents count too. (Nothing is read when caching is off.)"""
        if self.folder is None:
            return ""
        digest = hashlib.sha256(f"{model_fingerprint}|{side}|{len(inputs)}\n".encode())
        for item in inputs:
            digest.update(str(item).encode("utf-8") + b"\0")
            if files:
                digest.update(file_sha256(item) + b"\0")
        return digest.hexdigest()[:32]

    def get_or_compute(self, label: str, key: str,
                       compute: Callable[[], tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, int]:
        """(embeddings, truncated count): from the cache if present and readable, else computed."""
        if self.folder is None:
            return compute()
        path = self.folder / f"{label}-{key}.safetensors"
        if path.is_file():
            try:
                stored = load_file(str(path))
                log.info("cache: reusing %s", path.name)
                return stored["embeddings"], int(stored["truncated"].item())
            except (SafetensorError, KeyError, OSError) as err:  # a damaged file: recompute it
                log.warning("cache: %s is unreadable (%s); recomputing", path, err)
        embeddings, truncated = compute()
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save({"embeddings": embeddings.contiguous(),
                                       "truncated": torch.tensor([truncated])}))
        return embeddings, truncated


def file_sha256(path: str | Path) -> bytes:
    digest = hashlib.sha256()  # hashlib.file_digest needs Python 3.11; the package supports 3.10
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()
