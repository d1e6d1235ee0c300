"""The concat caption encoder: the LLM's embedding concatenated with the original CLIP
model's own text embedding, [LLM ‖ CLIP-text]. Stage 2 uses it two ways:

- "concat, single head" (`model.loss_terms: [llm]`, the default): the one adaptor maps the
  whole concatenation to the joint space, trained with one contrastive loss. A variant of
  ours, not a row of the paper.
- Table 10's method (d) (`model.loss_terms: [llm, clip_text, cat]`): a head per encoder
  and one on their concatenation, three contrastive losses (multi_encoder.py), which
  splits this embedding back into its two parts (the store's identity records the CLIP
  part's width as `concat_clip_dim`).

Both halves are frozen in stage 2 (only LoRA, in online_lora, trains the LLM half), so the
concatenation is precomputable like the LLM embedding alone: `llm2clip embed` stores it
and offline stage 2 never runs either text model. Each half is L2-normalised before
concatenating so neither dominates by scale.

A concat encoder is a folder: `concat_encoder.json` (the CLIP text side's source: an HF
CLIP/SigLIP id or folder, or a DualEncoder folder) + `llm/` (the stage-1 encoder). Every
command that takes a caption-encoder folder accepts it; `load_caption_encoder` picks.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic_file import atomic_write_text
from .caption_encoder import CaptionEncoder
from .fingerprint import fingerprint_tensors
from .protocol import TextEmbeddings

CONCAT_FILE = "concat_encoder.json"
CLIP_PREFIX = "clip_"  # tokenised CLIP-side inputs travel in the same batch dict under this prefix


def is_concat_folder(source: str | os.PathLike) -> bool:
    return (Path(source) / CONCAT_FILE).is_file()


def load_clip_text_side(source: str | os.PathLike):
    """The original CLIP's text side: a DualEncoder folder or an HF CLIP/SigLIP model."""
    from ..baseline import DualEncoder, HFClipBaseline
    from ..baseline.dual_encoder import CONFIG_FILE

    loader = DualEncoder if (Path(source) / CONFIG_FILE).is_file() else HFClipBaseline
    return loader.from_pretrained(source).requires_grad_(False).eval()


class ConcatTextEncoder(nn.Module):
    def __init__(self, llm: CaptionEncoder, clip_text: nn.Module, clip_source: str):
        super().__init__()
        self.llm = llm
        self.clip_text = clip_text.requires_grad_(False).eval()
        self.clip_source = str(clip_source)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **llm_options) -> "ConcatTextEncoder":
        config = json.loads((Path(directory) / CONCAT_FILE).read_text(encoding="utf-8"))
        if "clip_text" not in config:
            raise ValueError(f"{Path(directory) / CONCAT_FILE}: no 'clip_text' source")
        llm = CaptionEncoder.from_pretrained(Path(directory) / "llm", **llm_options)
        clip_text = load_clip_text_side(config["clip_text"]).to(llm.device)
        return cls(llm, clip_text, config["clip_text"])

    def save_pretrained(self, directory: str | os.PathLike, merge: bool = False) -> None:
        directory = Path(directory)
        self.llm.save_pretrained(directory / "llm", merge=merge)
        atomic_write_text(directory / CONCAT_FILE, json.dumps({"clip_text": self.clip_source}, indent=2) + "\n")

    def train(self, mode: bool = True) -> "ConcatTextEncoder":
        super().train(mode)
        self.clip_text.eval()  # always frozen
        return self

    # --------------------------------------------------------- what callers read
    @property
    def settings(self):
        return self.llm.settings

    @property
    def has_lora(self) -> bool:
        return self.llm.has_lora

    @property
    def dim(self) -> int:
        return self.llm.dim + self.clip_text.dim

    @property
    def max_tokens(self) -> int:
        """The LLM side's limit (the CLIP side reads its first 77 tokens by design)."""
        return self.llm.max_tokens

    @property
    def device(self) -> torch.device:
        return self.llm.device

    def identity(self) -> dict[str, Any]:
        return {**self.llm.identity(), "concat_clip_text": self.clip_source, "concat_clip_dim": self.clip_text.dim}

    def weights_fingerprint(self) -> str:
        clip = fingerprint_tensors({}, self.clip_text.state_dict())
        return hashlib.sha256(f"{self.llm.weights_fingerprint()}|{clip}".encode()).hexdigest()

    # --------------------------------------------------------- encoding
    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        batch = self.llm.tokenize(captions)
        batch.update({CLIP_PREFIX + k: v for k, v in self.clip_text.tokenize(captions).items()})
        return batch

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        """A batch from `tokenize` -> [B, dim]: normalised LLM half (with grad) ‖ CLIP half."""
        clip_inputs = {k[len(CLIP_PREFIX):]: batch.pop(k) for k in list(batch) if k.startswith(CLIP_PREFIX)}
        with torch.no_grad():
            clip = self.clip_text.encode_tokens(**clip_inputs).float()
        return torch.cat([F.normalize(self.llm(**batch).float(), dim=-1), clip.to(self.device)], dim=-1)

    @torch.no_grad()
    def encode(self, captions: list[str], batch_size: int = 32, show_progress: bool = False) -> TextEmbeddings:
        """Captions -> [N, dim] on CPU: the LLM's embedding ‖ the CLIP text embedding (each
        unit norm). `.truncated` counts the LLM side's cuts: the CLIP side reads a caption's
        first 77 tokens by design, as the original CLIP does."""
        llm = self.llm.encode(captions, batch_size=batch_size, show_progress=show_progress)
        clip = self.clip_text.encode(captions, batch_size=batch_size).embeddings.float().cpu()
        return TextEmbeddings.of(torch.cat([llm.embeddings, clip], dim=-1), llm.truncated)


def make_concat_encoder(llm: str | os.PathLike, clip_text: str | os.PathLike,
                        out: str | os.PathLike) -> ConcatTextEncoder:
    """Write a concat-encoder folder from a caption encoder and a CLIP text side (both checked by loading)."""
    if Path(out).exists() and any(Path(out).iterdir()):
        raise ValueError(f"{out}: exists and is not empty")
    # a local folder is recorded absolute, so the concat folder loads from any working directory
    source = str(Path(clip_text).resolve()) if Path(clip_text).exists() else str(clip_text)
    encoder = ConcatTextEncoder(CaptionEncoder.from_pretrained(llm, precision="fp32"), load_clip_text_side(source),
                                source)
    encoder.save_pretrained(out)
    return encoder


def load_caption_encoder(source: str | os.PathLike, **options):
    """A caption encoder from any folder or id the CLI accepts: a concat-encoder folder
    (method d) or anything `CaptionEncoder.from_pretrained` takes (method a)."""
    if is_concat_folder(source):
        return ConcatTextEncoder.from_pretrained(source, **options)
    return CaptionEncoder.from_pretrained(source, **options)
