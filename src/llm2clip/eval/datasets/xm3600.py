"""Crossmodal-3600 (XM3600): 3600 images captioned in 36 languages; one benchmark per language.

`captions.jsonl` has one line per image: `{"image/key": "000411001ff7dd4f", "en":
{"caption": ["...", "..."], "caption/tokenized": [...], "caption/tokenized/lowercase": [...]},
"de": {...}, ...}`; an image has one or more captions per language. Images are
`images/<key>.jpg` next to the file by default. `path` may be the file or its folder.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from .fields import as_caption_list, required, text_field
from .json_files import iter_jsonl_objects
from .retrieval_benchmark import Entry, RetrievalBenchmark, build_benchmark

XM3600_FILE = "captions.jsonl"
KEY_FIELD = "image/key"


def xm3600_languages(path) -> list[str]:
    """The language codes that have captions in the file, sorted."""
    languages: set[str] = set()
    for _, row in iter_jsonl_objects(_captions_file(path)):
        languages.update(k for k, v in row.items() if k != KEY_FIELD and isinstance(v, dict) and "caption" in v)
    return sorted(languages)


def read_xm3600(path, image_root=None, *, language: str = "en", skip_missing: bool = False,
                limit: int | None = None, name: str | None = None) -> RetrievalBenchmark:
    """The `language` captions of every image; an image without that language is counted."""
    path = _captions_file(path)
    entries, without_language = [], 0
    for where, row in iter_jsonl_objects(path):
        key = text_field(required(row, KEY_FIELD, where), KEY_FIELD, where)
        if language not in row:
            without_language += 1
            continue
        captions = required(row[language], "caption", f"{where}: {language!r}")
        entries.append(Entry(f"{key}.jpg", as_caption_list(captions, f"{language}.caption", where), where))
    if not entries:
        raise DataError(f"{path}: no captions in language {language!r}; the file has {xm3600_languages(path)}")
    root = Path(image_root) if image_root else path.parent / "images"
    skipped = {"image_without_language": without_language} if without_language else {}
    return build_benchmark(name or f"xm3600-{language}", path, root, entries, language=language,
                           skip_missing=skip_missing, limit=limit, skipped=skipped)


def _captions_file(path) -> Path:
    path = Path(path)
    return path / XM3600_FILE if path.is_dir() else path
