"""ShareGPT4V-1k: the first 1000 items of ShareGPT4V's captioner file (1:1, long captions).

The file is `share-captioner_coco_lcs_sam_1246k_1107.json`, one JSON list of
`{"id": ..., "image": "coco/train2017/000000000009.jpg", "conversations":
[{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": CAPTION}]}`.
The caption is `conversations[1].value`. Image paths are relative to `image_root`, by
default the JSON file's folder (ShareGPT4V's `data/` layout: `coco/`, `sam/`, `llava/`, ...).
Only the first items are parsed; the rest of the (GB-sized) file is never read.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .fields import required, text_field
from .json_files import first_json_list_items
from .retrieval_benchmark import Entry, RetrievalBenchmark, build_benchmark

SHAREGPT4V_FIRST = 1000  # the protocol of Long-CLIP / LLM2CLIP: the file's first 1000 items


def read_sharegpt4v(path, image_root=None, *, skip_missing: bool = False, limit: int | None = None,
                    name: str = "sharegpt4v-1k") -> RetrievalBenchmark:
    """The first `SHAREGPT4V_FIRST` items (fewer with `limit`); a missing image drops its item."""
    path = Path(path)
    first = SHAREGPT4V_FIRST if limit is None else min(limit, SHAREGPT4V_FIRST)
    entries = [_entry(path, i, item) for i, item in enumerate(first_json_list_items(path, first))]
    root = Path(image_root) if image_root else path.parent
    return build_benchmark(name, path, root, entries, language="en", skip_missing=skip_missing)


def _entry(path: Path, i: int, item) -> Entry:
    where = f"{path}: item {i}"
    image = text_field(required(item, "image", where), "image", where)
    conversations = required(item, "conversations", where)
    if not isinstance(conversations, list) or len(conversations) < 2:
        raise DataError(f"{where}: \"conversations\" should be a list of at least 2 turns (the caption is turn 1)")
    caption = required(conversations[1], "value", f"{where}: conversations[1]")
    return Entry(image, [text_field(caption, "value", f"{where}: conversations[1]")], where)
