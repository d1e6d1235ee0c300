"""The demo's last step: search the test images with long queries, baseline next to LLM2CLIP.

The queries are near-duplicate test scenes' walk captions (near_duplicates.py): each
family's scenes read the same in their first 77 tokens, so the baseline's text tower sees
one text for the whole family, while the LLM reads to the object that tells them apart.
The images are every test scene and every near-duplicate test scene; each model indexes
them with its own image side (search/). Written to `eval/search.html` (gallery) and
`eval/search.png` (contact sheet); the summary records each model's hits and whether the
query's own scene came first.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from .near_duplicates import FAMILY_SIZE, NEAR_DUPLICATE_FIELD

log = logging.getLogger("llm2clip.demo")

SEARCH_MODELS = ("baseline", "llm2clip")
N_QUERIES = 3  # the first scene of each of the first N families
TOP_K = 5


def step_search(folder: Path, data: dict[str, str], baseline: dict, models: dict[str, str]) -> dict | None:
    try:
        from ..search import search_showcase
    except ImportError as missing:  # the [search] extra (faiss-cpu); `make demo` installs it
        log.warning("search: skipped (%s); pip install 'llm2clip[search]' to end the demo with a search", missing)
        return None
    test, neardup = _rows(data["test"]), _rows(data["neardup_test"])
    chosen = neardup[::FAMILY_SIZE][:N_QUERIES]
    queries = [row[NEAR_DUPLICATE_FIELD] for row in chosen]
    root = Path(data["test"]).parent
    images = [str(root / row["image"]) for row in test + neardup]
    folders = {"baseline": baseline["model"], "llm2clip": models["llm2clip"]}
    shown = search_showcase({name: folders[name] for name in SEARCH_MODELS}, images, queries, folder, k=TOP_K,
                            title="LLM2CLIP demo: long queries whose scenes differ past 77 tokens")
    wanted = [str(root / row["image"]) for row in chosen]
    first = {name: sum(shown["results"][q][name][0][0] == want for q, want in zip(queries, wanted))
             for name in SEARCH_MODELS}
    return {"html": shown["html"], "png": shown["png"], "images": len(images), "queries": queries,
            "query_images": wanted, "own_scene_first": first, "hits": shown["results"]}


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
