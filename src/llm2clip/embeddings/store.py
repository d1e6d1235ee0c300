"""The embedding store on disk, and its reader `EmbeddingStore`.

A store is a folder:

  plan.json               what is being written: encoder identity, dtype, dim, and per
                          shard its caption count and `plan_digest` (a sha256 over its
                          rows' (sample id, field, caption-text hash)); written first
  shard-00000.safetensors one per shard, written atomically; tensors
                            embeddings [n, D]  fp16 | bf16 | fp32 | int8
                            scale      [n]     float32, int8 only (see quantize.py)
                            text_hash  [n, 16] uint8, the first 16 bytes of sha256(caption)
                          and, under the metadata key "llm2clip", a JSON object with the
                          rows' `ids` and `fields`, the shard number, dtype, identity
                          digest, plan digest and `data_sha256` (over the tensor bytes)
  store.json              the manifest: plan.json + each shard's size and data hash.
                          Written last, once every shard exists: a store without it is
                          incomplete and is refused.

Rows are keyed by (sample id, field): `field` is the caption's source label in its
CaptionRecord (`raw_caption`, `shortSV`, ... or `caption.3` for the 4th caption of a
list-valued field), i.e. the key `CaptionRecord.caption_by_source()` files it under, so
stage 2 looks a sample's chosen caption up by exactly the name it chose it by.

Reading parses the safetensors header itself and maps each tensor with `numpy.memmap`:
random access touches only the rows asked for, and numpy (which has no bfloat16) reads
bf16 rows as raw uint16. Everything is safetensors/JSON: nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import IncompleteStoreError, StoreError, StoreMismatchError
from .identity import identity_differences
from .quantize import dequantize
from .text_hash import TEXT_HASH_BYTES, text_hash

FORMAT = "llm2clip-embedding-store"
FORMAT_VERSION = 1
MANIFEST = "store.json"
PLAN = "plan.json"
META_KEY = "llm2clip"
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
_NUMPY_DTYPES = {"F16": np.float16, "BF16": np.uint16, "F32": np.float32, "I8": np.int8, "U8": np.uint8}
_RESUME_HINT = "rerun `llm2clip embed` with the same arguments to resume"


# ------------------------------------------------------------------ shared format
def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def plan_digest(rows: Iterable[tuple[str, str, bytes]]) -> str:
    """sha256 over a shard's (sample id, field, text hash) rows, in order."""
    digest = hashlib.sha256()
    for sample_id, field, hashed in rows:
        digest.update(json.dumps([sample_id, field, hashed.hex()]).encode("utf-8") + b"\n")
    return digest.hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: unreadable ({err})") from None


class ShardFile:
    """One shard file: its safetensors header, our metadata, and memmaps of its tensors."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as handle:
                head = handle.read(8)
                size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
                if not 0 < size <= _MAX_HEADER_BYTES:
                    raise ValueError("no safetensors header")
                header = json.loads(handle.read(size))
            self.meta = json.loads((header.pop("__metadata__", None) or {}).get(META_KEY, "null"))
        except (OSError, ValueError, struct.error) as err:  # JSONDecodeError is a ValueError
            raise StoreError(f"{self.path}: not a readable shard ({err})") from None
        if not isinstance(self.meta, dict):
            raise StoreError(f"{self.path}: not a shard of an llm2clip embedding store")
        self.data_start = 8 + size
        self.tensors: dict[str, dict[str, Any]] = header
        self.expected_size = self.data_start + max((t["data_offsets"][1] for t in header.values()), default=0)
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str) -> np.ndarray:
        """The tensor `name`, memory-mapped (opened on first use)."""
        if name not in self._arrays:
            info = self.tensors[name]
            begin, end = info["data_offsets"]
            dtype = np.dtype(_NUMPY_DTYPES[info["dtype"]])
            if end == begin:
                self._arrays[name] = np.zeros(info["shape"], dtype)
            else:
                self._arrays[name] = np.memmap(self.path, dtype=dtype, mode="r", offset=self.data_start + begin,
                                               shape=tuple(info["shape"]))
        return self._arrays[name]

    def data_sha256(self) -> str:
        """sha256 over the raw bytes of every tensor, in name order (as the writer hashed them)."""
        digest = hashlib.sha256()
        for name in sorted(self.tensors):
            digest.update(np.ascontiguousarray(self.array(name)).reshape(-1).view(np.uint8).data)
        return digest.hexdigest()

    def problem(self, planned: dict[str, Any], identity_digest: str, dtype: str, dim: int,
                verify_data: bool) -> str | None:
        """Why this file is not the planned shard (None: it is)."""
        meta = self.meta
        if self.path.stat().st_size != self.expected_size:
            return f"size {self.path.stat().st_size} bytes, header says {self.expected_size}"
        if meta.get("identity_digest") != identity_digest:
            return "written by another encoder"
        if meta.get("dtype") != dtype:
            return f"dtype {meta.get('dtype')}, planned {dtype}"
        if meta.get("plan_digest") != planned["plan_digest"] or meta.get("count") != planned["count"]:
            return "holds other captions than planned"
        if self.tensors.get("embeddings", {}).get("shape") != [planned["count"], dim]:
            return "embeddings have the wrong shape"
        if verify_data and self.data_sha256() != meta.get("data_sha256"):
            return "content hash does not match (corrupted)"
        return None

    def __getstate__(self):  # memmaps would pickle as full copies; reopen them lazily instead
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state


def shard_problem(path: Path, planned: dict[str, Any], identity_digest: str, dtype: str, dim: int,
                  verify_data: bool = True) -> str | None:
    """Why `path` is not a complete, valid copy of the planned shard (None: it is)."""
    if not path.is_file():
        return "missing"
    try:
        return ShardFile(path).problem(planned, identity_digest, dtype, dim, verify_data)
    except StoreError as err:
        return str(err)


# ------------------------------------------------------------------ the reader
class EmbeddingStore:
    """Random access to a finished store: `get(sample_id, field)` -> float32 [D].

    `len(store)` is the number of stored embeddings (one per (sample id, field));
    `store.ids` lists the distinct sample ids in store order, `store.fields` the fields.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any], shards: list[ShardFile]):
        self.directory = directory
        self.manifest = manifest
        self.identity: dict[str, Any] = manifest["identity"]
        self.dtype: str = manifest["dtype"]
        self.dim: int = int(manifest["dim"])
        self.fields: list[str] = list(manifest["fields"])
        self._shards = shards
        self._offsets = np.cumsum([0] + [int(s.meta["count"]) for s in shards])
        self._index: dict[tuple[str, str], int] = {}
        for shard, start in zip(shards, self._offsets):
            fields = [sys.intern(f) for f in shard.meta["fields"]]
            self._index.update(((i, f), int(start) + row) for row, (i, f) in enumerate(zip(shard.meta["ids"], fields)))
        self.ids: list[str] = list(dict.fromkeys(sample_id for sample_id, _ in self._index))
        self._id_set = set(self.ids)

    # -------------------------------------------------------------- opening
    @classmethod
    def open(cls, directory: str | Path, expected_identity: dict[str, Any] | None = None,
             records: Sequence | None = None, field_names: Sequence[str] | None = None,
             verify_data: bool = False) -> "EmbeddingStore":
        """Open a finished store, refusing one that is incomplete or does not match.

        expected_identity: the identity the embeddings must come from (e.g.
          `expected_identity_of_folder(stage1_dir)`); a difference raises
          StoreMismatchError naming the differing keys.
        records: CaptionRecords the store will be used with: every (id, field) caption of
          them (restricted to `field_names` if given) must be in the store with the same
          text, else StoreMismatchError naming the ids.
        verify_data: also re-hash every shard's bytes (reads the whole store).
        """
        directory = Path(directory)
        manifest = _read_manifest(directory)
        if expected_identity is not None:
            differences = identity_differences(manifest["identity"], expected_identity)
            if differences:
                raise StoreMismatchError(
                    f"{directory}: the embeddings were written by another caption encoder than expected; "
                    f"differing keys: {'; '.join(differences)}. Rerun `llm2clip embed` with this encoder.")
        shards = [_open_shard(directory, manifest, k, entry, verify_data) for k, entry in enumerate(manifest["shards"])]
        store = cls(directory, manifest, shards)
        if records is not None:
            store.verify_records(records, field_names)
        return store

    def verify_records(self, records: Sequence, field_names: Sequence[str] | None = None) -> None:
        """Raise StoreMismatchError unless every caption of `records` that can be drawn
        (restricted to `field_names`; see alignment.py) is stored, unchanged.

        This is what keeps embeddings aligned with their samples: a store looked up by id
        for a file whose captions changed (or were reordered) would otherwise hand back
        embeddings of other captions without any error.
        """
        from .alignment import verify_alignment

        verify_alignment(self, ((r.id, r.caption_by_source()) for r in records), field_names,
                         data="the records", redo="Re-embed this caption file with `llm2clip embed`.")

    # -------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return tuple(key) in self._index

    def row(self, sample_id: str, field: str) -> int | None:
        """The global row of (sample id, field), or None when it is not stored."""
        return self._index.get((sample_id, field))

    def has_sample(self, sample_id: str) -> bool:
        return sample_id in self._id_set

    def text_hashes(self, rows: np.ndarray) -> np.ndarray:
        """uint8 [n, TEXT_HASH_BYTES]: the caption-text hashes of global `rows`, read from
        the memory-mapped shards (one gather per shard)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), TEXT_HASH_BYTES), dtype=np.uint8)
        which = np.searchsorted(self._offsets, rows, side="right") - 1
        for k in np.unique(which):
            take = which == k
            out[take] = self._shards[k].array("text_hash")[rows[take] - self._offsets[k]]
        return out

    def text_matches(self, sample_id: str, field: str, caption: str) -> bool:
        """True if (sample id, field) is stored and was embedded from exactly `caption`."""
        row = self.row(sample_id, field)
        return row is not None and self.text_hashes(np.array([row]))[0].tobytes() == text_hash(caption)

    def keys(self) -> list[tuple[str, str]]:
        """Every (sample id, field), in store order."""
        return list(self._index)

    def get(self, sample_id: str, field: str | None = None) -> np.ndarray:
        """The float32 [D] embedding of one caption; `field` may be omitted when the sample
        has a single one. A missing key raises KeyError."""
        return self.get_many([sample_id], field)[0]

    def get_many(self, ids: Sequence[str], field: str | Sequence[str] | None = None) -> np.ndarray:
        """float32 [n, D] rows for `ids` (one field for all, or one per id). A row holding
        NaN/inf raises StoreError naming the store, id and field (it would poison a loss)."""
        fields = [field] * len(ids) if field is None or isinstance(field, str) else list(field)
        if len(fields) != len(ids):
            raise ValueError(f"got {len(ids)} ids but {len(fields)} fields")
        rows = np.array([self._row(i, f) for i, f in zip(ids, fields)], dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        which = np.searchsorted(self._offsets, rows, side="right") - 1
        for k in np.unique(which):
            take = which == k
            local = rows[take] - self._offsets[k]
            shard = self._shards[k]
            scale = shard.array("scale")[local] if self.dtype == "int8" else None
            out[take] = dequantize(shard.array("embeddings")[local], self.dtype, scale)
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if len(bad):
            sample_id, field = str(ids[int(bad[0])]), fields[int(bad[0])]
            field = field or next(f for f in self.fields if (sample_id, f) in self._index)  # its only one
            raise StoreError(f"{self.directory}: the stored embedding of sample id {sample_id!r}, field {field!r} "
                             "holds non-finite values (NaN/inf); re-embed it (`llm2clip embed --overwrite`)")
        return out

    def _row(self, sample_id: str, field: str | None) -> int:
        sample_id = str(sample_id)
        if field is None:
            fields = [f for f in self.fields if (sample_id, f) in self._index]
            if len(fields) != 1:
                raise KeyError(f"sample id {sample_id!r} has {len(fields)} fields {fields} in the store; name one")
            field = fields[0]
        row = self._index.get((sample_id, field))
        if row is None:
            raise KeyError(f"no embedding for sample id {sample_id!r}, field {field!r} in {self.directory}")
        return row

    def __repr__(self) -> str:
        return (f"EmbeddingStore({str(self.directory)!r}, {len(self)} embeddings of dim {self.dim}, "
                f"dtype={self.dtype}, fields={self.fields})")


def _read_manifest(directory: Path) -> dict[str, Any]:
    if not (directory / MANIFEST).is_file():
        raise _why_no_manifest(directory)
    manifest = read_json(directory / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{directory / MANIFEST}: not an llm2clip embedding store manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{directory / MANIFEST}: store format version {manifest.get('format_version')}, "
                         f"this llm2clip reads version {FORMAT_VERSION}; re-embed with this version")
    return manifest


def _why_no_manifest(directory: Path) -> StoreError:
    if not directory.is_dir():
        return StoreError(f"{directory}: no such embedding store folder")
    if not (directory / PLAN).is_file():
        return StoreError(f"{directory}: not an embedding store (no {MANIFEST}); write one with `llm2clip embed`")
    plan = read_json(directory / PLAN)
    missing = [shard_name(k) for k in range(len(plan.get("shards", []))) if not (directory / shard_name(k)).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        return IncompleteStoreError(f"{directory}: incomplete embedding store: {len(missing)} of "
                                    f"{len(plan['shards'])} shard(s) missing ({shown}); {_RESUME_HINT}")
    return IncompleteStoreError(f"{directory}: incomplete embedding store: all shards exist but the manifest "
                                f"{MANIFEST} was not written (other ranks may still be running); {_RESUME_HINT}")


def _open_shard(directory: Path, manifest: dict[str, Any], index: int, entry: dict[str, Any],
                verify_data: bool) -> ShardFile:
    path = directory / shard_name(index)
    if not path.is_file():
        raise IncompleteStoreError(f"{directory}: incomplete embedding store: shard {path.name} "
                                   f"({index + 1} of {len(manifest['shards'])}) is missing; {_RESUME_HINT}")
    shard = ShardFile(path)
    problem = shard.problem(entry, manifest["identity_digest"], manifest["dtype"], int(manifest["dim"]), verify_data)
    if problem is None and shard.meta.get("data_sha256") != entry.get("data_sha256"):
        problem = "not the shard the manifest lists (content hash differs)"
    if problem is not None:
        raise StoreError(f"{path}: {problem}; delete it and {_RESUME_HINT}")
    return shard
