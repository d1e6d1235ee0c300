"""What a store row remembers of its caption's text, to notice any change of it
(alignment.py compares the data's captions with these)."""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

TEXT_HASH_BYTES = 16


def text_hash(caption: str) -> bytes:
    """What a row remembers of its caption: enough to notice any change of text."""
    return hashlib.sha256(caption.encode("utf-8")).digest()[:TEXT_HASH_BYTES]


def text_hashes_of(captions: Sequence[str]) -> np.ndarray:
    """uint8 [n, TEXT_HASH_BYTES]: `text_hash` of each caption, as one array."""
    hashes = b"".join(map(text_hash, captions))
    return np.frombuffer(hashes, dtype=np.uint8).reshape(len(captions), TEXT_HASH_BYTES)
