"""Train a DualEncoder's projections on image-text pairs, from features computed once.

Both towers are frozen, so each image and caption goes through its tower exactly once;
the steps then only touch two linear maps and the logit scale (seconds on a CPU). Each
step draws a batch of distinct images (epoch-wise shuffled) and one of each image's
captions at random, with CLIP's symmetric InfoNCE.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..data.records import read_caption_records
from ..losses import clip_loss
from ..vision import load_image
from .dual_encoder import DualEncoder

log = logging.getLogger(__name__)


@torch.no_grad()
def image_features(model: DualEncoder, paths: Sequence[str | os.PathLike], batch_size: int = 32) -> torch.Tensor:
    chunks = []
    for start in tqdm(range(0, len(paths), batch_size), desc="baseline image features", unit="batch"):
        chunks.append(model.image_features([load_image(p) for p in paths[start:start + batch_size]]).cpu())
    return torch.cat(chunks)


def train_dual_encoder(model: DualEncoder, images: Sequence[str | os.PathLike], captions: Sequence[Sequence[str]],
                       steps: int, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.1,
                       seed: int = 0) -> dict:
    """Fit the projections so image i matches its captions `captions[i]` (one or more).

    Returns a summary: first and last loss, steps, pairs, and how many captions the text
    tower truncated."""
    if len(images) != len(captions) or not images:
        raise ValueError(f"need one caption list per image; got {len(images)} images, {len(captions)} lists")
    empty = [i for i, texts in enumerate(captions) if not texts]
    if empty:
        raise ValueError(f"image {images[empty[0]]} has no caption")
    image_feats = image_features(model, images)
    flat = [text for texts in captions for text in texts]
    text_feats = model.text_features(flat, show_progress=True)
    offsets = torch.tensor([0] + [len(texts) for texts in captions]).cumsum(0)
    generator = torch.Generator().manual_seed(seed)
    heads = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(heads, lr=lr, weight_decay=weight_decay)
    batch_size = min(batch_size, len(images))
    order, losses = torch.empty(0, dtype=torch.long), []
    model.train()
    for _ in tqdm(range(steps), desc="baseline steps", unit="step"):
        if len(order) < batch_size:  # a new epoch: every image once before any repeats
            order = torch.randperm(len(images), generator=generator)
        batch, order = order[:batch_size], order[batch_size:]
        counts = offsets[batch + 1] - offsets[batch]
        pick = offsets[batch] + (torch.rand(len(batch), generator=generator) * counts).long()
        loss = clip_loss(model.project_images(image_feats[batch]), model.project_texts(text_feats[pick]), model.scale())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return {"steps": steps, "images": len(images), "captions": len(flat), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "truncated_captions": text_feats.truncated}


def train_demo_baseline(jsonl: str | os.PathLike, folder: str | os.PathLike, fields: Sequence[str], steps: int,
                        image_tower: str = "efficientnet-lite0", embed_dim: int = 256, seed: int = 0) -> DualEncoder:
    """The demo's baseline: the embedded image tower + MiniLM (77 tokens), aligned on the
    records of `jsonl` (image path + `fields` captions), saved to `folder`."""
    records = read_caption_records(jsonl, caption_fields=list(fields))[0]
    root = Path(jsonl).parent
    torch.manual_seed(seed)  # the projections' initialisation
    model = DualEncoder(image_tower, embed_dim=embed_dim)
    captions = [[r.caption_by_source()[f] for f in fields] for r in records]
    summary = train_dual_encoder(model, [root / r.image for r in records], captions, steps=steps, seed=seed)
    log.info("baseline: loss %.3f -> %.3f over %d steps; %d of %d captions truncated at %d tokens",
             summary["first_loss"], summary["last_loss"], steps, summary["truncated_captions"], summary["captions"],
             model.max_text_tokens)
    model.info = {"trained_on": str(jsonl), "fields": list(fields), **summary}
    model.save_pretrained(folder)
    return model
