"""The models an evaluation compares, behind one small interface.

Every model gives `encode_image(list of PIL images)` and `encode_text(list[str],
batch_size=...)`, both L2-normalised [N, D], the text side's result saying how many texts
it cut to `max_text_tokens` (text/protocol.py). LLM2CLIP folders, HF CLIP/SigLIP models
(the baseline: the original text tower) and the demo's DualEncoder all qualify.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..vision.image_loading import load_image
from .eval_config import ModelSpec


def load_eval_model(spec: ModelSpec, device: str = "cpu") -> Any:
    if spec.kind == "llm2clip":
        from ..model import LLM2CLIP

        model = LLM2CLIP.from_pretrained(spec.path, device=device)
        if model.caption_encoder is None:
            raise ValueError(f"model {spec.name!r}: {spec.path} has no caption_encoder/ folder, so it cannot "
                             "encode benchmark captions")
        return model.eval()
    from ..baseline import DualEncoder, HFClipBaseline

    loader = HFClipBaseline if spec.kind == "hf_clip" else DualEncoder
    return loader.from_pretrained(spec.path).to(device).eval()


def model_fingerprint(spec: ModelSpec) -> str:
    """Changes whenever the model's files do (name, size, modification time of each),
    so cached embeddings are never reused for a retrained model. An HF id is its name."""
    root = Path(spec.path)
    digest = hashlib.sha256(f"{spec.kind}|{spec.path}".encode())
    if root.exists():
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def text_limit(model) -> int | None:
    """The longest text the model reads, in tokens (77 for CLIP)."""
    return model.max_text_tokens


@torch.no_grad()
def encode_images(model, paths: Sequence[str | os.PathLike], batch_size: int, desc: str = "images") -> torch.Tensor:
    chunks = []
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", leave=False):
        images = [load_image(p) for p in paths[start:start + batch_size]]
        chunks.append(model.encode_image(images).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


@torch.no_grad()
def encode_texts(model, texts: Sequence[str], batch_size: int) -> tuple[torch.Tensor, int]:
    """(embeddings, how many of these texts the model truncated)."""
    encoded = model.encode_text(list(texts), batch_size=batch_size)
    return encoded.embeddings.float().cpu(), encoded.truncated
