"""The identity of a caption encoder: everything its embeddings are a function of.

A store records the identity of the encoder that wrote it, and stage 2 refuses a store
whose identity differs from the caption encoder it is told to use — otherwise embeddings
of one model would silently be trained against as if they were another's.

identity = the encoder's settings (`identity()`: base model, pooling, attention,
instruction, max length; a concat encoder adds its CLIP side) + `weights_fingerprint`: a
sha256 over the settings and the weights that differ from the base model (the LoRA
tensors, or all tensors of a full model; fingerprint.py).

`expected_identity_of_folder` computes the identity of a saved stage-1 folder from its
files (encoder_folder.py reads them), so offline stage 2 can check a store without
loading the LLM.
"""
from __future__ import annotations

import os
from typing import Any

from .encoder_folder import read_encoder_folder
from .fingerprint import SafetensorsTensors, fingerprint_tensors
from .settings import EncoderSettings

FINGERPRINT_KEY = "weights_fingerprint"


def store_identity(encoder) -> dict[str, Any]:
    """The identity a store written by `encoder` records."""
    return {**encoder.identity(), FINGERPRINT_KEY: encoder.weights_fingerprint()}


def expected_identity_of_folder(path: str | os.PathLike) -> dict[str, Any]:
    """The identity `store_identity(load_caption_encoder(path))` would give.

    A folder saved by `CaptionEncoder.save_pretrained` is read from its files (settings +
    adapter or model safetensors), without loading the LLM. Anything else (a concat-encoder
    folder, a base LLM's name or folder, weights not in safetensors) is loaded to tell.
    """
    saved = read_encoder_folder(path)
    files = saved.weight_files() if saved is not None else []
    if not files:
        return _identity_by_loading(str(path))
    settings = EncoderSettings(**saved.settings).identity()  # same defaults/normalisation as loading
    return {**settings, FINGERPRINT_KEY: fingerprint_tensors(settings, SafetensorsTensors(files))}


def _identity_by_loading(path: str) -> dict[str, Any]:
    from .concat_encoder import load_caption_encoder

    return store_identity(load_caption_encoder(path, precision="fp32"))
