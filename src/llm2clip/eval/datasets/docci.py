"""DOCCI (Google): detailed human descriptions, one per image (1:1); the test split.

`docci_descriptions.jsonlines` has one JSON object per line: `{"example_id": "test_00000",
"split": "test", "image_file": "test_00000.jpg", "description": "...", ...}`; splits are
train, test, qual_dev, qual_test. Images are in `images/` next to the file by default.
`path` may be the file or the folder holding it.
"""
from __future__ import annotations

from pathlib import Path

from .fields import required, text_field
from .json_files import iter_jsonl_objects
from .retrieval_benchmark import Entry, RetrievalBenchmark, build_benchmark

DOCCI_FILE = "docci_descriptions.jsonlines"


def read_docci(path, image_root=None, *, skip_missing: bool = False, limit: int | None = None,
               split: str = "test", name: str = "docci") -> RetrievalBenchmark:
    """The rows of `split` (default test), in file order."""
    path = Path(path)
    if path.is_dir():
        path = path / DOCCI_FILE
    entries = []
    for where, row in iter_jsonl_objects(path):
        if required(row, "split", where) != split:
            continue
        image = text_field(required(row, "image_file", where), "image_file", where)
        entries.append(Entry(image, [text_field(required(row, "description", where), "description", where)], where))
    root = Path(image_root) if image_root else path.parent / "images"
    return build_benchmark(name, path, root, entries, language="en", skip_missing=skip_missing, limit=limit)
