"""How a store uses its encoder's identity: a digest to stamp shards with, and the
differences to name when a store does not belong to an encoder.

The identity itself lives with the encoder's save format (`text/identity.py`); its names
are re-exported here for 0.1 (`llm2clip.embeddings.expected_identity_of_folder`, ...).
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

from ..text.encoder_folder import ADAPTER_WEIGHTS, SETTINGS_FILE
from ..text.fingerprint import canonical_json, fingerprint_tensors
from ..text.identity import FINGERPRINT_KEY, expected_identity_of_folder, store_identity


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


__all__ = ["ADAPTER_WEIGHTS", "FINGERPRINT_KEY", "SETTINGS_FILE", "canonical_json", "expected_identity_of_folder",
           "fingerprint_tensors", "identity_differences", "identity_digest", "store_identity"]
