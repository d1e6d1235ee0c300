"""Building an image index: `llm2clip index --model DIR --images FOLDER|SHARDS --out INDEX`.

An index is a folder:
  plan.json                what is being built: the model folder and its identity
                           (models.py), the images' source, dtype, dimension, FAISS kind,
                           and per shard its image count and plan digest (a sha256 over its
                           images' keys and stamps); written first
  shard-00000.safetensors  one per `shard_size` images, written atomically: `vectors` [n, D]
                           (fp16/fp32; zeros for a skipped image) and `ok` [n] uint8; in the
                           metadata the keys, skip reasons, identity digest, plan digest and
                           the sha256 of the tensor bytes (the embedding store's shard format)
  index.faiss              the FAISS index over every image that could be read (faiss_index.py)
  images.json              per FAISS id: [key, file or shard, tar member or null]
  skipped.jsonl            each image that could not be read, and why
  index.json               the manifest, written last: the plan + counts + each file's size
                           and sha256. A folder without it is an unfinished build.

Resume: rerunning the command keeps every shard that is the planned one (same model
identity, images, dtype) with intact bytes, and embeds the rest: a killed run loses at
most the shard in progress, and the result equals an uninterrupted build. A folder
holding an index of another model is refused unless `overwrite`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..atomic_file import atomic_write_bytes, atomic_write_text
from ..embeddings.identity import canonical_json, identity_differences, identity_digest
from ..embeddings.store import ShardFile, StoreError, shard_name
from ..embeddings.writer import write_shard
from .errors import IncompleteIndexError, IndexMismatchError, SearchIndexError
from .faiss_index import IndexKind, fill_index, index_bytes, new_index, training_rows
from .models import load_model, model_identity
from .sources import ImageRef, describe, iter_loaded, list_images

log = logging.getLogger(__name__)

FORMAT = "llm2clip-image-index"
FORMAT_VERSION = 1
PLAN, MANIFEST = "plan.json", "index.json"
FAISS_FILE, IMAGES_FILE, SKIPPED_FILE = "index.faiss", "images.json", "skipped.jsonl"


def build_index(model: str | os.PathLike, images: str | os.PathLike | Sequence, out: str | os.PathLike,
                kind: IndexKind | None = None, batch_size: int = 32, shard_size: int = 1024,
                device: str = "cpu", show_progress: bool = False, overwrite: bool = False) -> Path:
    """Embed every image of `images` (folder, shards or a list of files) with the model folder
    `model` into an index at `out`; return `out`. A rerun resumes; see the module docstring."""
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
    kind = kind or IndexKind()
    out = Path(out)
    refs = list_images(images)
    identity = model_identity(model)
    encoder = load_model(model, with_text=False, device=device)
    dim = _output_dim(encoder)
    plan = _plan(model, images, refs, identity, kind, dim, shard_size)
    out.mkdir(parents=True, exist_ok=True)
    if _finished(out, plan):
        log.info("%s already holds this index (%d images); nothing to do", out, plan["count"])
        return out
    _refuse_other_model(out, plan, overwrite)
    (out / MANIFEST).unlink(missing_ok=True)  # from now on it would describe another build
    atomic_write_text(out / PLAN, canonical_json(plan) + "\n")
    _embed_shards(encoder, refs, plan, out, batch_size, show_progress)
    return finish_index(out)


def _output_dim(encoder) -> int:
    from PIL import Image

    with torch.no_grad():
        return int(encoder.encode_image([Image.new("RGB", (64, 64))]).shape[-1])


def _plan(model, images, refs: list[ImageRef], identity: dict, kind: IndexKind, dim: int,
          shard_size: int) -> dict[str, Any]:
    shards = [refs[start:start + shard_size] for start in range(0, len(refs), shard_size)]
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": str(Path(model).resolve()),
            "identity": identity, "identity_digest": identity_digest(identity), "images": describe(images),
            "count": len(refs), "dim": dim, "shard_size": shard_size, **{"index": kind.to_dict()},
            "shards": [{"file": shard_name(k), "count": len(rows), "plan_digest": _rows_digest(rows)}
                       for k, rows in enumerate(shards)]}
    body["plan_id"] = hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()
    return body


def _rows_digest(rows: list[ImageRef]) -> str:
    digest = hashlib.sha256()
    for ref in rows:
        digest.update(json.dumps([ref.key, ref.stamp, ref.path, ref.member]).encode("utf-8") + b"\n")
    return digest.hexdigest()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _finished(out: Path, plan: dict[str, Any]) -> bool:
    manifest = _read(out / MANIFEST)
    return (manifest is not None and manifest.get("plan_id") == plan["plan_id"]
            and all((out / name).is_file() and (out / name).stat().st_size == entry["bytes"]
                    for name, entry in manifest.get("files", {}).items()))


def _refuse_other_model(out: Path, plan: dict[str, Any], overwrite: bool) -> None:
    """Never replace an index of another model by accident (a mistyped --out)."""
    old = _read(out / MANIFEST) or _read(out / PLAN)
    if old is None or overwrite or old.get("identity_digest") == plan["identity_digest"]:
        return
    differences = identity_differences(old.get("identity", {}), plan["identity"])
    raise IndexMismatchError(f"{out} already holds an index built by another model ({'; '.join(differences)}); "
                             "choose another --out or replace it (--overwrite / overwrite=True)")


def shard_problem(path: Path, planned: dict[str, Any], plan: dict[str, Any]) -> str | None:
    """Why `path` is not the planned shard, complete and intact (None: it is)."""
    if not path.is_file():
        return "missing"
    try:
        shard = ShardFile(path)
    except StoreError as err:
        return str(err)
    meta = shard.meta
    if path.stat().st_size != shard.expected_size:
        return f"size {path.stat().st_size} bytes, header says {shard.expected_size}"
    if meta.get("identity_digest") != plan["identity_digest"]:
        return "written by another model"
    if meta.get("plan_digest") != planned["plan_digest"] or meta.get("dtype") != plan["index"]["dtype"]:
        return "holds other images or another dtype than planned"
    if shard.tensors.get("vectors", {}).get("shape") != [planned["count"], plan["dim"]]:
        return "vectors have the wrong shape"
    if shard.data_sha256() != meta.get("data_sha256"):
        return "content hash does not match (corrupted)"
    return None


def _embed_shards(encoder, refs: list[ImageRef], plan: dict[str, Any], out: Path, batch_size: int,
                  show_progress: bool) -> None:
    from tqdm.auto import tqdm

    for stale in out.glob("shard-*.safetensors.tmp"):  # left by a killed run
        stale.unlink()
    todo = [k for k, planned in enumerate(plan["shards"]) if shard_problem(out / shard_name(k), planned, plan)]
    reused = len(plan["shards"]) - len(todo)
    if reused:
        log.info("%s: resuming, %d of %d shard(s) already embedded", out, reused, len(plan["shards"]))
    size = plan["shard_size"]
    with tqdm(total=sum(plan["shards"][k]["count"] for k in todo), desc="index", unit="img",
              disable=not show_progress) as progress:
        for k in todo:
            rows = refs[k * size:(k + 1) * size]
            vectors, skipped = _embed(encoder, rows, plan["dim"], batch_size, progress)
            _write(out / shard_name(k), k, rows, vectors, skipped, plan)


@torch.no_grad()
def _embed(encoder, rows: list[ImageRef], dim: int, batch_size: int, progress) -> tuple[torch.Tensor, dict[int, str]]:
    vectors = torch.zeros(len(rows), dim)
    skipped: dict[int, str] = {}
    batch: list[tuple[int, Any]] = []

    def flush():
        if batch:
            vectors[[i for i, _ in batch]] = encoder.encode_image([image for _, image in batch]).float().cpu()
            progress.update(len(batch))
            batch.clear()

    for row, (ref, image, why) in enumerate(iter_loaded(rows)):
        if image is None:
            skipped[row] = why
            log.warning("skipped image %s", why)
            progress.update(1)
            continue
        batch.append((row, image))
        if len(batch) == batch_size:
            flush()
    flush()
    return vectors, skipped


def _write(path: Path, k: int, rows: list[ImageRef], vectors: torch.Tensor, skipped: dict[int, str],
           plan: dict[str, Any]) -> None:
    dtype = torch.float16 if plan["index"]["dtype"] == "fp16" else torch.float32
    ok = torch.ones(len(rows), dtype=torch.uint8)
    ok[list(skipped)] = 0
    meta = {"format_version": FORMAT_VERSION, "shard": k, "count": len(rows), "dtype": plan["index"]["dtype"],
            "identity_digest": plan["identity_digest"], "plan_digest": plan["shards"][k]["plan_digest"],
            "keys": [r.key for r in rows], "paths": [r.path for r in rows], "members": [r.member for r in rows],
            "skipped": {str(row): why for row, why in sorted(skipped.items())}}
    write_shard(path, {"vectors": vectors.to(dtype).contiguous(), "ok": ok}, meta)


# ------------------------------------------------------------------ finishing
def finish_index(out: str | os.PathLike) -> Path:
    """Every planned shard present and intact -> index.faiss, images.json, skipped.jsonl, and
    index.json last."""
    out = Path(out)
    plan = _read(out / PLAN)
    if plan is None:
        raise IncompleteIndexError(f"{out}: no {PLAN}; build the index with `llm2clip index`")
    problems = [f"{e['file']}: {why}" for e in plan["shards"] if (why := shard_problem(out / e["file"], e, plan))]
    if problems:
        raise IncompleteIndexError(f"{out}: cannot finish the index: {'; '.join(problems[:5])}; rerun `llm2clip index` "
                         "with the same arguments to resume")
    shards = [ShardFile(out / entry["file"]) for entry in plan["shards"]]
    kind = IndexKind(**plan["index"])
    oks = [np.asarray(s.array("ok")).astype(bool) for s in shards]
    count = int(sum(ok.sum() for ok in oks))
    if count == 0:
        raise SearchIndexError(f"{out}: none of the {plan['count']} images could be read (see {SKIPPED_FILE})")
    index = new_index(kind, plan["dim"], count)
    fill_index(index, (np.asarray(s.array("vectors"))[ok] for s, ok in zip(shards, oks)),
               _training_sample(shards, oks, index, kind, count))
    images = [[key, path, member] for s, ok in zip(shards, oks)
              for key, path, member, good in zip(s.meta["keys"], s.meta["paths"], s.meta["members"], ok) if good]
    skipped = [{"key": s.meta["keys"][int(row)], "reason": why} for s in shards for row, why in s.meta["skipped"].items()]
    files = {FAISS_FILE: index_bytes(index), IMAGES_FILE: (json.dumps(images) + "\n").encode("utf-8"),
             SKIPPED_FILE: "".join(json.dumps(row) + "\n" for row in skipped).encode("utf-8")}
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    manifest = {**plan, "indexed": count, "skipped": len(skipped),
                "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                          for name, data in files.items()},
                "shards": [{**entry, "data_sha256": s.meta["data_sha256"]} for entry, s in zip(plan["shards"], shards)]}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    log.info("%s: index complete, %d images indexed, %d skipped", out, count, len(skipped))
    return out


def _training_sample(shards, oks, index, kind: IndexKind, count: int) -> np.ndarray | None:
    """IVF only: the k-means sample (`training_rows`) gathered from the shards."""
    if index.is_trained:
        return None
    rows = training_rows(count, kind)
    picked, start = [], 0
    for shard, ok in zip(shards, oks):
        good = np.flatnonzero(ok)
        mine = rows[(rows >= start) & (rows < start + len(good))] - start
        picked.append(np.asarray(shard.array("vectors"))[good[mine]])
        start += len(good)
    return np.concatenate(picked).astype(np.float32)
