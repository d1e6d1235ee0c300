"""The models an index can be built and searched with, and their identity.

An LLM2CLIP folder (`llm2clip.json`) is the main case; the demo's baseline DualEncoder
(`dual_encoder.json`) and a local HF CLIP/SigLIP folder also work, so an LLM2CLIP index
can be compared with the original model's on the same images.

An index records the identity of the model whose image side wrote its vectors; searching
it with another model would rank by numbers of two different spaces, so it is refused,
naming the differing keys, as the embedding store refuses another caption encoder.
For an LLM2CLIP folder:
  config:          sha256 of llm2clip.json's content (dims, adaptor, terms, ...)
  image_side:      sha256 over vision/'s files (weights and preprocessing) by content
  heads:           sha256 of model.safetensors (projection, adaptor, logit scale, heads)
  caption_encoder: the caption encoder's identity digest (embeddings/identity.py), or None
                   for a folder without caption_encoder/ (image queries only)
For the other kinds: the kind and a sha256 over every file of the folder by content.
Never paths or modification times: a copied folder is the same model.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def model_kind(folder: str | Path) -> str:
    folder = Path(folder)
    if (folder / "llm2clip.json").is_file():
        return "llm2clip"
    if (folder / "dual_encoder.json").is_file():
        return "dual_encoder"
    if (folder / "config.json").is_file():
        return "hf_clip"
    raise FileNotFoundError(f"{folder}: not a model folder (no llm2clip.json, dual_encoder.json or config.json)")


def model_identity(folder: str | Path) -> dict[str, Any]:
    from ..embeddings.identity import canonical_json, expected_identity_of_folder, identity_digest

    folder = Path(folder)
    kind = model_kind(folder)
    if kind != "llm2clip":
        return {"kind": kind, "files": _folder_digest(folder)}
    config = json.loads((folder / "llm2clip.json").read_text(encoding="utf-8"))
    encoder = folder / "caption_encoder"
    return {
        "kind": kind,
        "config": hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest(),
        "image_side": _folder_digest(folder / "vision"),
        "heads": _file_digest(folder / "model.safetensors"),
        "caption_encoder": identity_digest(expected_identity_of_folder(str(encoder))) if encoder.is_dir() else None,
    }


def load_model(folder: str | Path, with_text: bool = True, device: str = "cpu"):
    """The model in eval mode. `with_text=False` skips an LLM2CLIP caption encoder (indexing
    needs only the image side, and the LLM is the big part)."""
    folder = Path(folder)
    kind = model_kind(folder)
    if kind == "llm2clip":
        from ..model import LLM2CLIP

        return LLM2CLIP.from_pretrained(folder, load_caption_encoder=with_text, device=device).eval()
    from ..eval.eval_config import ModelSpec
    from ..eval.models import load_eval_model

    return load_eval_model(ModelSpec(name=folder.name, path=str(folder), kind=kind), device=device)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _folder_digest(folder: Path) -> str:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing (the model folder is incomplete)")
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\n{_file_digest(path)}\n".encode("utf-8"))
    return digest.hexdigest()
