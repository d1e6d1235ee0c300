"""Models side by side on the same images and queries: what the demo ends with.

    search_showcase({"baseline": "runs/demo/baseline/final", "llm2clip": "runs/demo/stage2/.../final"},
                    "runs/demo/data/images", ["a long query ...", ...], "runs/demo/eval", k=5)

builds (or resumes) an exact index per model under `out_dir/index-<name>/`, runs every
query through each, and writes `out_dir/search.html` (the gallery, query by query, the
models one under the other) and `out_dir/search.png` (the same as a contact sheet).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from .build import build_index
from .faiss_index import IndexKind
from .gallery import QueryResult, write_contact_sheet, write_gallery
from .index import Index


def search_showcase(models: Mapping[str, str | os.PathLike], images: str | os.PathLike | Sequence,
                    queries: Sequence[str], out_dir: str | os.PathLike, k: int = 5, device: str = "cpu",
                    kind: IndexKind | None = None, title: str = "Search: the same queries, each model") -> dict:
    """Returns {"html": page, "png": contact sheet, "results": {query: {model: [[key, score], ...]}}}."""
    out_dir = Path(out_dir)
    indexes = {name: Index.open(build_index(folder, images, out_dir / f"index-{name}", kind=kind, device=device),
                                device=device) for name, folder in models.items()}
    hits = {name: index.search(list(queries), k) for name, index in indexes.items()}
    shown = [QueryResult(query, hits[name][q], label=name) for q, query in enumerate(queries) for name in indexes]
    return {"html": str(write_gallery(out_dir / "search.html", shown, title=title)),
            "png": str(write_contact_sheet(out_dir / "search.png", shown)),
            "results": {query: {name: [[h.key, round(h.score, 4)] for h in hits[name][q]] for name in indexes}
                        for q, query in enumerate(queries)}}
