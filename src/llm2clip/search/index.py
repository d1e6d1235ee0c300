"""Searching an index: `Index.open(folder).search(texts, k)`, and `llm2clip search`.

A text query of any length or language goes through the model's caption encoder and
adaptor (`encode_text`); an image query through the tower and projection (`encode_image`).
Both land in the joint space the index's vectors were written in, and FAISS returns the
k largest inner products (cosines). Opening an index checks that it is complete, that
its files are the ones its manifest lists, and that the model used for the queries is the
model that built it (`models.model_identity`); anything else is refused with the reason.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..embeddings.identity import identity_differences
from .build import FAISS_FILE, FORMAT, FORMAT_VERSION, IMAGES_FILE, MANIFEST, PLAN
from .errors import IncompleteIndexError, IndexMismatchError, SearchIndexError
from .faiss_index import IndexKind, index_from_bytes, set_search_parameters
from .models import load_model, model_identity
from .sources import ImageRef, load_ref


@dataclass(frozen=True)
class Hit:
    rank: int  # 1 = best
    score: float  # cosine similarity of query and image
    key: str  # the image's path relative to the indexed folder, or "<shard>#<member>"
    path: str  # the file (or shard) it was read from
    member: str | None = None  # the tar member, for shards

    def ref(self) -> ImageRef:
        return ImageRef(self.key, "", self.path, self.member)


class Index:
    """A finished image index and the model that built it (loaded on the first query)."""

    def __init__(self, folder: Path, manifest: dict[str, Any], faiss_index, images: list, model_folder: Path,
                 device: str = "cpu"):
        self.folder, self.manifest, self.faiss = folder, manifest, faiss_index
        self.images = images
        self.model_folder, self.device = model_folder, device
        self.kind = IndexKind(**manifest["index"])
        self._model = None

    @classmethod
    def open(cls, folder: str | os.PathLike, model: str | os.PathLike | None = None, device: str = "cpu",
             verify_data: bool = False) -> "Index":
        """Open a finished index for the model folder `model` (default: the one that built it).
        An index of another model raises IndexMismatchError naming the differing keys."""
        folder = Path(folder)
        manifest = _read_manifest(folder)
        model_folder = Path(model) if model is not None else Path(manifest["model"])
        differences = identity_differences(manifest["identity"], model_identity(model_folder))
        if differences:
            raise IndexMismatchError(
                f"{folder} was built by another model than {model_folder} "
                f"(differing: {'; '.join(d.replace('store has', 'index has') for d in differences)}); "
                f"rebuild it with `llm2clip index --model {model_folder}`")
        data = {name: _checked_file(folder, name, manifest, verify_data) for name in (FAISS_FILE, IMAGES_FILE)}
        images = json.loads(data[IMAGES_FILE])
        faiss_index = index_from_bytes(data[FAISS_FILE])
        if faiss_index.ntotal != len(images) or faiss_index.d != manifest["dim"]:
            raise SearchIndexError(f"{folder / FAISS_FILE}: {faiss_index.ntotal} vectors of dim {faiss_index.d}, "
                                   f"the manifest says {len(images)} of dim {manifest['dim']}")
        return cls(folder, manifest, faiss_index, images, model_folder, device)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.model_folder, with_text=True, device=self.device)
        return self._model

    # ------------------------------------------------------------------ queries
    @torch.no_grad()
    def search(self, texts: str | Sequence[str], k: int = 10, **params) -> list[list[Hit]]:
        """The k best images for each text, best first."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError("every text query must be a non-empty string")
        return self.search_vectors(self.model.encode_text(texts).float().cpu().numpy(), k, **params)

    @torch.no_grad()
    def search_images(self, images: Sequence, k: int = 10, **params) -> list[list[Hit]]:
        """The k images most similar to each query image (PIL images or paths), best first."""
        from ..vision.image_loading import load_image

        loaded = [image if hasattr(image, "convert") else load_image(image) for image in images]
        return self.search_vectors(self.model.encode_image(loaded).float().cpu().numpy(), k, **params)

    def search_vectors(self, vectors: np.ndarray, k: int = 10, nprobe: int | None = None,
                       ef_search: int | None = None) -> list[list[Hit]]:
        """The k best images for each L2-normalised query vector [n, dim] of this index's space."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.manifest["dim"]:
            raise ValueError(f"query vectors must be [n, {self.manifest['dim']}], got {list(vectors.shape)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        set_search_parameters(self.faiss, self.kind, nprobe, ef_search)
        scores, ids = self.faiss.search(vectors, min(k, len(self)))
        return [[self._hit(rank, float(score), int(i)) for rank, (score, i) in enumerate(zip(row_s, row_i), 1)
                 if i >= 0] for row_s, row_i in zip(scores, ids)]

    def _hit(self, rank: int, score: float, position: int) -> Hit:
        key, path, member = self.images[position]
        return Hit(rank, score, key, path, member)

    def load(self, hit: Hit):
        """The image of a hit, as RGB."""
        return load_ref(hit.ref())

    def __repr__(self) -> str:
        return (f"Index({str(self.folder)!r}, {len(self)} images, {self.kind.kind}/{self.kind.dtype}, "
                f"dim {self.manifest['dim']}, model {str(self.model_folder)!r})")


def _read_manifest(folder: Path) -> dict[str, Any]:
    if not (folder / MANIFEST).is_file():
        if (folder / PLAN).is_file():
            raise IncompleteIndexError(f"{folder}: unfinished index (no {MANIFEST}); rerun the `llm2clip index` "
                                       "command that started it to finish it")
        raise SearchIndexError(f"{folder}: not an image index (no {MANIFEST}); build one with `llm2clip index`")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SearchIndexError(f"{folder / MANIFEST}: unreadable ({err})") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise SearchIndexError(f"{folder / MANIFEST}: not an llm2clip image index of format version {FORMAT_VERSION}")
    return manifest


def _checked_file(folder: Path, name: str, manifest: dict[str, Any], verify_data: bool) -> bytes:
    """The file's bytes, refused when its size (or, with verify_data, its sha256) is not the
    manifest's. images.json is always hashed: a changed list would mislabel every result."""
    path, entry = folder / name, manifest["files"][name]
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SearchIndexError(f"{path}: unreadable ({err.strerror or err}); rebuild the index") from None
    if len(data) != entry["bytes"]:
        raise SearchIndexError(f"{path}: {len(data)} bytes, the manifest says {entry['bytes']}; rebuild the index "
                               "(`llm2clip index --overwrite`)")
    if (verify_data or name == IMAGES_FILE) and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise SearchIndexError(f"{path}: content does not match the manifest's sha256; rebuild the index "
                               "(`llm2clip index --overwrite`)")
    return data
