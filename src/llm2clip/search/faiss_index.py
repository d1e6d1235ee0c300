"""The FAISS side of an index: which index type, building it from shards, reading it back.

Every kind scores by inner product (the vectors are L2-normalised, so it is the cosine):
  flat  exact search over every vector (the default)
  ivf   an inverted file: k-means cells (`nlist`), a query visits `nprobe` of them
  hnsw  a graph (`hnsw_m` links per node), a query explores `ef_search` candidates
Vectors are stored fp16 (FAISS's fp16 scalar quantiser: exact inner products of the fp16
values) or fp32, as the index's `dtype` says; fp16 halves the memory for a cosine error
around 1e-3.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

KINDS = ("flat", "ivf", "hnsw")
# k-means points per IVF cell: FAISS wants >= 39 and uses at most 256; 64 keeps the training
# of a million-image index to minutes on a CPU (BENCHMARKS.md section 7 has its recall)
TRAINING_POINTS_PER_CELL = 64
_INSTALL = "image search needs FAISS: pip install 'llm2clip[search]' (faiss-cpu)"


def import_faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    return faiss


@dataclass
class IndexKind:
    kind: str = "flat"
    dtype: str = "fp16"  # fp16 | fp32
    nlist: int | None = None  # ivf cells; None: about 4 sqrt(n), at least 39 training points per cell
    nprobe: int = 16  # ivf cells visited per query (default; `search` can override)
    hnsw_m: int = 32
    ef_search: int = 64  # hnsw candidates per query (default; `search` can override)
    ef_construction: int = 40  # FAISS's default

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.dtype not in ("fp16", "fp32"):
            raise ValueError(f"index dtype must be fp16 or fp32, got {self.dtype!r}")
        for name in ("nprobe", "hnsw_m", "ef_search", "ef_construction"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist must be >= 1, got {self.nlist}")

    def to_dict(self) -> dict:
        return asdict(self)

    def cells_for(self, count: int) -> int:
        if self.nlist is not None:
            return min(self.nlist, max(1, count))
        return max(1, min(int(4 * math.sqrt(count)), count // 39))


def new_index(kind: IndexKind, dim: int, count: int):
    """An empty FAISS index of `kind` for `count` vectors of `dim`, inner-product metric."""
    faiss = import_faiss()
    storage = "SQfp16" if kind.dtype == "fp16" else "Flat"
    factory = {"flat": storage, "ivf": f"IVF{kind.cells_for(count)},{storage}",
               "hnsw": f"HNSW{kind.hnsw_m},{storage}"}[kind.kind]
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if kind.kind == "hnsw":
        index.hnsw.efConstruction = kind.ef_construction
    return index


def training_rows(count: int, kind: IndexKind) -> np.ndarray:
    """Sorted rows of the IVF k-means sample: TRAINING_POINTS_PER_CELL per cell, drawn with a
    fixed seed, so the same vectors always give the same index."""
    want = min(count, TRAINING_POINTS_PER_CELL * kind.cells_for(count))
    return np.sort(np.random.default_rng(0).choice(count, size=want, replace=False))


def fill_index(index, chunks: Iterable[np.ndarray], training_sample: np.ndarray | None) -> None:
    """Train (IVF: k-means on `training_sample`) and add the vectors chunk by chunk, so
    memory holds the index plus one shard."""
    if not index.is_trained:
        index.train(np.ascontiguousarray(training_sample, dtype=np.float32))
    for chunk in chunks:
        if len(chunk):
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))


def set_search_parameters(index, kind: IndexKind, nprobe: int | None = None, ef_search: int | None = None) -> None:
    faiss = import_faiss()
    if kind.kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(nprobe or kind.nprobe)
    elif kind.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(ef_search or kind.ef_search)


def index_bytes(index) -> bytes:
    faiss = import_faiss()
    return faiss.serialize_index(index).tobytes()


def index_from_bytes(data: bytes):
    faiss = import_faiss()
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
