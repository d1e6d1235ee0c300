"""Flickr30k / COCO Karpathy test split (multi-caption: ~5 captions per image, not always 5).

Two layouts are read:

- the test JSON used by BLIP / CLIP-benchmark / LLM2CLIP (`coco_karpathy_test.json`,
  `flickr30k_test.json`): a list of `{"image": "val2014/COCO_val2014_000000391895.jpg",
  "caption": ["A man ...", ...]}` (a single string is accepted too);
- Karpathy's original `dataset_coco.json` / `dataset_flickr30k.json`:
  `{"images": [{"filepath": "val2014", "filename": "...jpg", "split": "test",
  "sentences": [{"raw": "A man ..."}, ...]}, ...]}`, of which the `split == "test"` images
  are taken (Flickr30k has no `filepath`).

Image paths are relative to `image_root`, by default the JSON file's folder.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .fields import as_caption_list, required, text_field
from .json_files import load_json
from .retrieval_benchmark import Entry, RetrievalBenchmark, build_benchmark


def read_karpathy(path, image_root=None, *, skip_missing: bool = False, limit: int | None = None,
                  name: str | None = None) -> RetrievalBenchmark:
    """The Karpathy test split in either layout; `limit` keeps the first N images."""
    path = Path(path)
    data = load_json(path)
    if isinstance(data, list):
        entries = _test_json_entries(path, data)
    elif isinstance(data, dict) and "images" in data:
        entries = _dataset_json_entries(path, data["images"])
    else:
        raise DataError(f"{path}: not a Karpathy test file; expected a list of {{image, caption}} objects "
                        f"or Karpathy's {{\"images\": [...]}}, found a JSON {type(data).__name__}")
    root = Path(image_root) if image_root else path.parent
    return build_benchmark(name or path.stem, path, root, entries, language="en",
                           skip_missing=skip_missing, limit=limit)


def _test_json_entries(path: Path, rows: list) -> list[Entry]:
    entries = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        image, captions = required(row, "image", where), required(row, "caption", where)
        entries.append(Entry(text_field(image, "image", where), as_caption_list(captions, "caption", where), where))
    return entries


def _dataset_json_entries(path: Path, images) -> list[Entry]:
    if not isinstance(images, list):
        raise DataError(f"{path}: \"images\" is a JSON {type(images).__name__}, expected a list")
    entries = []
    for i, row in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(row, dict):
            raise DataError(f"{where}: a JSON {type(row).__name__}, expected an object")
        if row.get("split") != "test":
            continue
        filename = text_field(required(row, "filename", where), "filename", where)
        reference = f"{row['filepath']}/{filename}" if row.get("filepath") else filename
        sentences = required(row, "sentences", where)
        if not isinstance(sentences, list):
            raise DataError(f"{where}: \"sentences\" is a JSON {type(sentences).__name__}, expected a list")
        captions = [s.get("raw") if isinstance(s, dict) else s for s in sentences]
        entries.append(Entry(reference, captions, where))
    if not entries:
        raise DataError(f"{path}: no image has \"split\": \"test\"")
    return entries
