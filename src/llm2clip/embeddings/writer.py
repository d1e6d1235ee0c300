"""Writing the embedding store: the frozen caption encoder runs once over every caption.

Keys. A row is keyed by (sample id, field), where `field` is the caption's source label in
its CaptionRecord (`record.sources`: the field name, or `name.i` for the i-th caption of a
list-valued field; position `i` as a string for records without sources). Records from
`read_caption_records` carry these labels already, so no separate list of field names
is needed, and stage 2 finds a caption under the very label its caption choice returns.
`fields` restricts which labels are embedded (naming `caption` selects `caption.0`, ...).

Plan. The captions, in record order and field order within a record, are cut into shards
of `shard_size` consecutive captions: shard k holds captions [k*S, (k+1)*S). The plan
depends only on the captions and S, never on the number of processes, so every rank
layout and every resume writes the same bytes. Within a shard the captions are sorted by
token length and batched in that order (little padding), then scattered back.

Ranks. Rank r of W writes the shards k with k % W == r. The manifest (store.json) is
written after all shards exist: by rank 0 after a barrier when torch.distributed is
initialised, otherwise by whichever process finds every shard present when it finishes.

Resume. Each shard is written to `<name>.tmp`, fsynced and renamed into place, so a shard
file is either complete or absent. A rerun keeps every shard that is the planned one
(same encoder identity, dtype and captions) and whose bytes match the hash recorded in it;
stray temp files are deleted; everything else is (re)written. Nothing is lost or doubled.

Another plan in the folder. A folder that already holds a store of another plan (other
captions, another shard size, encoder or dtype) is refused unless asked: `overwrite`
replaces it (shards that happen to match are still kept), `extend` grows a finished store
by the captions it lacks, and only when every caption it holds is in the new data with the
same text, so no stored row is lost or changed.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import distributed as dist_utils
from ..atomic_file import atomic_write_bytes
from ..data.records import field_matches
from ..errors import DataError
from ..text.fingerprint import canonical_json
from ..text.identity import store_identity
from .errors import IncompleteStoreError, StoreMismatchError
from .identity import identity_differences, identity_digest
from .quantize import check_dtype, quantize
from .store import (FORMAT, FORMAT_VERSION, MANIFEST, META_KEY, PLAN, ShardFile, plan_digest, read_json, shard_name,
                    shard_problem)
from .text_hash import text_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionEntry:
    """One caption to embed, and the key it is stored under."""

    id: str
    field: str
    text: str


# ------------------------------------------------------------------ planning
def caption_entries(records: Sequence, fields: Sequence[str] | None = None) -> list[CaptionEntry]:
    """Every caption of `records` (restricted to `fields`), in record order."""
    entries: list[CaptionEntry] = []
    seen: set[tuple[str, str]] = set()
    for record in records:
        for field, text in record.caption_by_source().items():
            if not field_matches(field, fields):
                continue
            key = (str(record.id), field)
            if key in seen:
                raise DataError(f"sample id {record.id!r} occurs more than once; ids must be unique")
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"sample id {record.id!r}, field {field!r}: the caption is empty")
            seen.add(key)
            entries.append(CaptionEntry(key[0], field, text))
    if not entries:
        raise DataError("no captions to embed" + (f" in the fields {list(fields)}" if fields else ""))
    return entries


@dataclass
class StorePlan:
    """Which captions go to which shard, for which encoder, dtype and dimension."""

    identity: dict[str, Any]
    dtype: str
    dim: int
    shard_size: int
    shards: list[list[CaptionEntry]]

    @classmethod
    def build(cls, entries: list[CaptionEntry], identity: dict[str, Any], dtype: str, dim: int,
              shard_size: int) -> "StorePlan":
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        shards = [entries[start:start + shard_size] for start in range(0, len(entries), shard_size)]
        return cls(identity, check_dtype(dtype), int(dim), int(shard_size), shards)

    def to_json(self) -> dict[str, Any]:
        """plan.json: everything but the shards' bytes (which store.json adds)."""
        shards = [{"file": shard_name(k), "count": len(rows), "plan_digest": _digest_of(rows)}
                  for k, rows in enumerate(self.shards)]
        body = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "identity": self.identity, "identity_digest": identity_digest(self.identity),
            "dtype": self.dtype, "dim": self.dim, "shard_size": self.shard_size,
            "count": sum(len(rows) for rows in self.shards), "n_shards": len(self.shards),
            "fields": list(dict.fromkeys(e.field for rows in self.shards for e in rows)),
            "shards": shards,
        }
        body["plan_id"] = hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()
        return body


def _digest_of(rows: list[CaptionEntry]) -> str:
    return plan_digest((e.id, e.field, text_hash(e.text)) for e in rows)


# ------------------------------------------------------------------ writing
def write_embedding_store(encoder, records: Sequence, out_dir: str | os.PathLike, fields: Sequence[str] | None = None,
                          dtype: str = "fp16", shard_size: int = 4096, batch_size: int = 64,
                          rank: int | None = None, world_size: int | None = None, show_progress: bool = False,
                          overwrite: bool = False, extend: bool = False) -> Path:
    """Embed every caption of `records` with `encoder` into a store at `out_dir`; return it.

    rank/world_size default to torch.distributed's (0 and 1 without it). A rerun resumes.
    A folder holding a store of another plan is refused unless `overwrite` (replace it) or,
    for a finished store of the same encoder and dtype, `extend` (add the captions it lacks).
    """
    rank, world_size = _rank_layout(rank, world_size)
    entries = caption_entries(records, fields)
    plan = StorePlan.build(entries, store_identity(encoder), dtype, encoder.dim, shard_size)
    body = plan.to_json()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if _already_written(out, body):
        log.info("%s already holds this store (%d embeddings); nothing to do", out, body["count"])
        return out
    if not overwrite:
        _refuse_other_store(out, body, entries, extend)
    dist_utils.barrier()  # every rank has looked at the old files before any is replaced
    (out / MANIFEST).unlink(missing_ok=True)  # it describes another plan from now on
    atomic_write_bytes(out / PLAN, (canonical_json(body) + "\n").encode("utf-8"), suffix=f".tmp{rank}")
    mine = [k for k in range(len(plan.shards)) if k % world_size == rank]
    for k in mine:
        (out / (shard_name(k) + ".tmp")).unlink(missing_ok=True)  # left by a killed run
    _write_my_shards(encoder, plan, body, out, mine, batch_size, show_progress)
    _finish(out, rank, body)
    return out


def _rank_layout(rank: int | None, world_size: int | None) -> tuple[int, int]:
    rank = dist_utils.rank() if rank is None else int(rank)
    world_size = dist_utils.world_size() if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


def _already_written(out: Path, body: dict[str, Any]) -> bool:
    """A finished store of exactly this plan, with every shard file of its recorded size."""
    if not (out / MANIFEST).is_file():
        return False
    try:
        manifest = read_json(out / MANIFEST)
    except DataError:
        return False
    if manifest.get("plan_id") != body["plan_id"]:
        return False
    return all((out / s["file"]).is_file() and (out / s["file"]).stat().st_size == s.get("bytes")
               for s in manifest.get("shards", []))


def _refuse_other_store(out: Path, body: dict[str, Any], entries: list[CaptionEntry], extend: bool) -> None:
    """Never replace embeddings already in `out` by accident (a mistyped --out, other data)."""
    old, name = _existing_plan(out)
    if old is None or old.get("plan_id") == body["plan_id"]:
        return  # an empty folder, or a rerun of the same plan (resume)
    differences = identity_differences(old.get("identity", {}), body["identity"])
    if old.get("dtype") != body["dtype"]:
        differences.append(f"dtype: store has {old.get('dtype')!r}, expected {body['dtype']!r}")
    if differences:
        raise StoreMismatchError(f"{out} already holds embeddings of another encoder or dtype "
                                 f"({'; '.join(differences)}); choose another output folder or overwrite it "
                                 "(--overwrite / overwrite=True)")
    if name == PLAN:
        raise StoreMismatchError(f"{out} holds an unfinished store of other captions or another shard size "
                                 f"({PLAN} differs); rerun the command that started it to finish it, choose another "
                                 "output folder, or replace it (--overwrite / overwrite=True; shards that match "
                                 "are kept)")
    lost, changed, added = _compare_with_stored(out, old, entries)
    if extend and not lost and not changed:
        log.info("%s: extending the store of %d embeddings by %d new caption(s)", out, old["count"], added)
        return
    examples = "; ".join(lost[:2] + changed[:2])
    detail = (f"{len(lost)} of its captions are not in this data and {len(changed)} have another text"
              + (f" (e.g. {examples})" if examples else "") + f", {added} caption(s) are new")
    if extend:
        raise StoreMismatchError(f"{out}: --extend only adds captions, it never drops or replaces a stored one: "
                                 f"{detail}; replace the store (--overwrite / overwrite=True) or choose another "
                                 "output folder")
    raise StoreMismatchError(f"{out} already holds a finished store of {old['count']} embeddings of other captions "
                             f"({detail}); add the new captions to it (--extend / extend=True), replace it "
                             "(--overwrite / overwrite=True), or choose another output folder")


def _existing_plan(out: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the finished store's manifest, or the plan of an unfinished one, and which file it is)."""
    for name in (MANIFEST, PLAN):
        if (out / name).is_file():
            try:
                return read_json(out / name), name
            except DataError:
                return None, None  # unreadable: nothing there can be resumed or read anyway
    return None, None


def _compare_with_stored(out: Path, manifest: dict[str, Any],
                         entries: list[CaptionEntry]) -> tuple[list[str], list[str], int]:
    """(stored captions missing from `entries`, stored captions whose text differs, new ones)."""
    planned = {(e.id, e.field): e.text for e in entries}
    lost, changed, stored = [], [], 0
    for k in range(len(manifest.get("shards", []))):
        shard = ShardFile(out / shard_name(k))
        hashes = shard.array("text_hash")
        for row, key in enumerate(zip(shard.meta["ids"], shard.meta["fields"])):
            stored += 1
            text = planned.get(key)
            if text is None:
                lost.append(f"sample id {key[0]!r} field {key[1]!r} is not in the data")
            elif bytes(hashes[row]) != text_hash(text):
                changed.append(f"sample id {key[0]!r} field {key[1]!r} has another text")
    return lost, changed, len(planned) - (stored - len(lost))


def _write_my_shards(encoder, plan: StorePlan, body: dict[str, Any], out: Path, mine: list[int],
                     batch_size: int, show_progress: bool) -> None:
    from tqdm.auto import tqdm

    was_training = encoder.training
    encoder.eval()  # frozen: no dropout, the numbers stage 2 online_frozen would compute
    reused, truncated = 0, 0
    try:
        for k in tqdm(mine, desc="embed", unit="shard", disable=not show_progress):
            planned = body["shards"][k]
            if shard_problem(out / shard_name(k), planned, body["identity_digest"], plan.dtype, plan.dim) is None:
                reused += 1
                continue
            rows = plan.shards[k]
            encoded = encoder.encode([e.text for e in rows], batch_size=batch_size)
            truncated += encoded.truncated
            write_shard(out / shard_name(k), shard_tensors(rows, encoded.embeddings, plan.dtype),
                        _shard_meta(k, rows, planned, body))
    finally:
        encoder.train(was_training)
    if truncated:
        log.warning("%d captions were longer than max_length=%d tokens and were truncated",
                    truncated, encoder.max_tokens)
    log.info("%s: %d shard(s) of this rank written, %d already done", out, len(mine) - reused, reused)


@torch.no_grad()
def shard_tensors(rows: list[CaptionEntry], embeddings: torch.Tensor, dtype: str) -> dict[str, torch.Tensor]:
    """The tensors of one shard: its stored embeddings and its captions' text hashes."""
    hashes = bytearray(b"".join(text_hash(e.text) for e in rows))
    hash_rows = torch.frombuffer(hashes, dtype=torch.uint8).reshape(len(rows), -1)
    return {**quantize(embeddings, dtype), "text_hash": hash_rows}


def _shard_meta(index: int, rows: list[CaptionEntry], planned: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "shard": index, "count": len(rows), "dtype": body["dtype"],
            "identity_digest": body["identity_digest"], "plan_digest": planned["plan_digest"],
            "ids": [e.id for e in rows], "fields": [e.field for e in rows]}


def write_shard(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write one shard atomically, stamped with the sha256 of its tensor bytes."""
    from safetensors.torch import save

    digest = hashlib.sha256()
    for name in sorted(tensors):  # the order ShardFile.data_sha256 reads them in
        digest.update(tensors[name].contiguous().view(torch.uint8).reshape(-1).numpy().data)
    # one metadata key only: safetensors keeps metadata in a hash map, so the byte layout of
    # several keys could vary between runs; one JSON string keeps shards bit-identical
    metadata = {META_KEY: canonical_json({**meta, "data_sha256": digest.hexdigest()})}
    atomic_write_bytes(path, save(tensors, metadata=metadata), suffix=".tmp")


# ------------------------------------------------------------------ finishing
def _finish(out: Path, rank: int, body: dict[str, Any]) -> None:
    if dist_utils.is_distributed():
        dist_utils.barrier()
        if rank == 0:
            finalize_embedding_store(out)
        dist_utils.barrier()
        return
    missing = [s["file"] for s in body["shards"] if not (out / s["file"]).is_file()]
    if missing:
        log.info("%s: %d shard(s) still to be written by other ranks; the last rank to finish writes %s",
                 out, len(missing), MANIFEST)
    else:
        finalize_embedding_store(out)


def finalize_embedding_store(out_dir: str | os.PathLike) -> Path:
    """Check that every planned shard is there and valid, then write the manifest.

    Called by the writer; call it yourself after running ranks as separate jobs without
    torch.distributed if none of them wrote store.json.
    """
    out = Path(out_dir)
    body = read_json(out / PLAN)
    shards, problems = [], []
    for k, planned in enumerate(body["shards"]):
        path = out / shard_name(k)
        problem = shard_problem(path, planned, body["identity_digest"], body["dtype"], body["dim"], verify_data=False)
        if problem is not None:
            problems.append(f"{path.name}: {problem}")
            continue
        shard = ShardFile(path)
        shards.append({**planned, "bytes": path.stat().st_size, "data_sha256": shard.meta["data_sha256"]})
    if problems:
        raise IncompleteStoreError(f"{out}: cannot finish the embedding store: {'; '.join(problems[:5])}"
                                   f"{' ...' if len(problems) > 5 else ''}; rerun `llm2clip embed` with the same "
                                   "arguments to resume")
    _remove_leftovers(out, len(body["shards"]))
    atomic_write_bytes(out / MANIFEST, (canonical_json({**body, "shards": shards}) + "\n").encode("utf-8"), suffix=".tmp")
    log.info("%s: embedding store complete (%d embeddings in %d shards)", out, body["count"], len(shards))
    return out


def _remove_leftovers(out: Path, n_shards: int) -> None:
    """Shard temp files of killed runs, and shards beyond the plan (from a larger earlier one)."""
    for path in out.glob("shard-*.safetensors*"):
        stem = path.name.split(".", 1)[0]
        number = stem.removeprefix("shard-")
        stale = not path.name.endswith(".safetensors") or (number.isdigit() and int(number) >= n_shards)
        if stale:
            path.unlink(missing_ok=True)
