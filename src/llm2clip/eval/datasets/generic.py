"""Any image-caption file as a benchmark: JSON Lines or CSV/TSV rows with an image field.

A row names its image in `image_field` (default `image`, relative to `image_root`, by
default the file's folder) and its captions in `fields` (default `caption`). A JSON field
may hold one caption or a list; several fields give several captions; rows repeating an
image add captions to that image. Every row must have every field (a benchmark is exact:
a row without its caption is a format error, not a skip).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ...data.text_file import read_text
from ...errors import DataError
from .fields import as_caption_list, required, text_field
from .json_files import iter_jsonl_objects
from .retrieval_benchmark import Entry, RetrievalBenchmark, build_benchmark

DEFAULT_FIELDS = ("caption",)


def read_jsonl(path, image_root=None, *, fields: Sequence[str] | str | None = None, image_field: str = "image",
               skip_missing: bool = False, limit: int | None = None, name: str | None = None,
               language: str | None = None) -> RetrievalBenchmark:
    """One JSON object per line; `limit` keeps the first N rows."""
    path = Path(path)
    return _build(path, iter_jsonl_objects(path), image_root, fields, image_field,
                  skip_missing=skip_missing, limit=limit, name=name, language=language)


def read_csv(path, image_root=None, *, fields: Sequence[str] | str | None = None, image_field: str = "image",
             skip_missing: bool = False, limit: int | None = None, name: str | None = None,
             language: str | None = None) -> RetrievalBenchmark:
    """A header row naming the fields (tab-separated when the file ends in .tsv)."""
    path = Path(path)
    return _build(path, _csv_rows(path), image_root, fields, image_field,
                  skip_missing=skip_missing, limit=limit, name=name, language=language)


def _build(path: Path, rows: Iterable[tuple[str, dict]], image_root, fields, image_field: str, *,
           skip_missing: bool, limit: int | None, name: str | None, language: str | None) -> RetrievalBenchmark:
    fields = caption_fields(fields)
    entries = (_entry(where, row, fields, image_field) for where, row in rows)
    root = Path(image_root) if image_root else path.parent
    return build_benchmark(name or path.stem, path, root, entries, language=language,
                           skip_missing=skip_missing, limit=limit)


def caption_fields(fields: Sequence[str] | str | None) -> list[str]:
    """The caption field names: None -> `caption`; "a,b" or ["a", "b"] -> both."""
    if fields is None:
        return list(DEFAULT_FIELDS)
    if isinstance(fields, str):
        fields = fields.split(",")
    names = [f.strip() for f in fields if f and f.strip()]
    if not names:
        raise ValueError(f"no caption field named in {fields!r}")
    return names


def _entry(where: str, row: dict, fields: list[str], image_field: str) -> Entry:
    image = text_field(required(row, image_field, where), image_field, where)
    captions = [c for f in fields for c in as_caption_list(required(row, f, where), f, where)]
    return Entry(image, captions, where)


def _csv_rows(path: Path) -> Iterator[tuple[str, dict]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise DataError(f"{path}: empty file, expected a header row naming the fields")
    for row in reader:
        where = f"{path}: line {reader.line_num}"
        if None in row:
            raise DataError(f"{where}: more cells than the header has names")
        # a short row leaves its last fields None: treat them as absent so the error names them
        yield where, {k: v for k, v in row.items() if v is not None}
