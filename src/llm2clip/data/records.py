"""Caption records: one image (or sample) with several captions, from CSV/TSV/JSONL/JSON.

Formats read (by file suffix):
  .jsonl/.jsonlines  one JSON object per line (DreamLIP-style: caption fields at top level)
  .csv/.tsv          a header row naming the fields
  .json              a list of objects, e.g. the Karpathy test JSON `[{image, caption: [..]}]`,
                     or Karpathy's `dataset_*.json` (`{"images": [{filename, sentences}]}`)

A caption field may hold a string or a list of strings (or of {"raw": ...}). Per-row
faults (bad JSON, non-UTF-8 bytes, too few usable captions) are skipped and counted;
empty, duplicate and absurdly long captions are dropped or clipped and counted. A
missing file, a caption field no row has, or duplicate ids are errors naming the file.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import DataError
from .read_stats import ReadStats
from .text_file import has_bad_bytes, read_text

# DreamLIP's caption columns, in the order the paper's recipes use them.
DREAMLIP_FIELDS = ("raw_caption", "shortSV", "longSV", "shortIB", "longIB", "shortLLA", "longLLA")
# Tried in this order when no caption field is configured and no DreamLIP field exists.
GENERIC_FIELDS = ("captions", "caption", "sentences", "text")
# A caption longer than this is clipped before tokenisation (which truncates it anyway):
# tokenising megabytes of text would stall a training step for nothing.
MAX_CAPTION_CHARS = 20_000


@dataclass
class CaptionRecord:
    id: str
    captions: list[str]
    image: str | None = None
    # where each caption came from: the field name, or `name.i` for the i-th caption of a
    # list-valued field (the key the embedding store files it under)
    sources: list[str] | None = None

    def caption_by_source(self) -> dict[str, str]:
        return dict(zip(self.sources or [str(i) for i in range(len(self.captions))], self.captions))


def field_matches(source: str, fields: Sequence[str] | None) -> bool:
    """True if a caption's source label belongs to one of `fields` (None: all do).

    A list-valued field `caption` labels its captions `caption.0`, `caption.1`, ...;
    naming `caption` selects all of them, naming `caption.1` just that one.
    """
    if fields is None:
        return True
    for field in fields:
        if source == field or (source.startswith(field + ".") and source[len(field) + 1:].isdigit()):
            return True
    return False


def read_caption_records(
    path: str | os.PathLike,
    caption_fields: list[str] | tuple[str, ...] | None = None,
    id_field: str = "id",
    image_field: str = "image",
    min_captions: int = 1,
    require_all_fields: bool = True,
) -> tuple[list[CaptionRecord], ReadStats]:
    """All usable records of `path`, in file order, and what was skipped.

    `caption_fields` lists the fields whose captions form a record, in order (captions 1
    and 2 of a record are the CRA pair). Default: the DreamLIP fields present, else the
    first generic field (`captions`, `caption`, `sentences`, `text`) present. With
    `require_all_fields=False`, configured fields that no row has are dropped (stage 2's
    real/dense lists name alternatives); at least one must exist.
    """
    path = Path(path)
    stats = ReadStats(str(path))
    rows = list(_rows(path, stats))
    if not rows:
        raise DataError(f"{path}: no usable records ({stats.summary()})" if stats.rows else f"{path}: no rows")
    fields = _resolve_fields(path, rows, caption_fields, require_all_fields)
    has_ids = any(id_field in row for _, row in rows)
    records: list[CaptionRecord] = []
    first_line: dict[str, str] = {}
    for index, (where, row) in enumerate(rows):
        found = _captions(row, fields, where, stats)
        if found is None:
            continue
        captions, sources = found
        if len(captions) < min_captions:
            stats.skip("too_few_captions", where)
            continue
        rid = _record_id(row, id_field, has_ids, index, path, where)
        if rid in first_line:
            raise DataError(f"{path}: {where}: id {rid!r} already used at {first_line[rid]}")
        first_line[rid] = where
        image = row.get(image_field, row.get("filename"))
        records.append(CaptionRecord(id=rid, captions=captions, image=None if image is None else str(image),
                                     sources=sources))
    stats.kept = len(records)
    if not records:
        raise DataError(f"{path}: no usable records ({stats.summary()})")
    return records, stats


def _rows(path: Path, stats: ReadStats) -> Iterator[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".jsonlines"):
        yield from iter_jsonl(path, stats)
    elif suffix in (".csv", ".tsv"):
        yield from _csv_rows(path, stats, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".json":
        yield from _json_rows(path, stats)
    else:
        raise DataError(f"{path}: unknown caption file type {suffix!r}; expected .jsonl, .csv, .tsv or .json")


def iter_jsonl(path: Path, stats: ReadStats) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`line N`, object) for each good line; bad lines are counted in `stats`."""
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        stats.rows += 1
        if has_bad_bytes(line):
            stats.skip("not_utf8", where)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            stats.skip("bad_json", where)
            continue
        if not isinstance(row, dict):
            stats.skip("not_an_object", where)
            continue
        yield where, row


def _csv_rows(path: Path, stats: ReadStats, delimiter: str) -> Iterator[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise DataError(f"{path}: empty file, expected a header row")
    for row in reader:
        where = f"line {reader.line_num}"
        stats.rows += 1
        if None in row:  # more cells than header names: the row is misaligned
            stats.skip("extra_cells", where)
            continue
        if any(v is not None and has_bad_bytes(v) for v in row.values()):
            stats.skip("not_utf8", where)
            continue
        yield where, {k: v for k, v in row.items() if v is not None}


def _json_rows(path: Path, stats: ReadStats) -> Iterator[tuple[str, dict[str, Any]]]:
    text = read_text(path)
    if has_bad_bytes(text):
        raise DataError(f"{path}: not UTF-8 text")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from err
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        data = data["images"]  # Karpathy dataset_*.json
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records (or Karpathy's {{\"images\": [...]}})")
    for number, row in enumerate(data):
        where = f"item {number}"
        stats.rows += 1
        if not isinstance(row, dict):
            stats.skip("not_an_object", where)
            continue
        yield where, row


def _resolve_fields(path: Path, rows: list[tuple[str, dict]], wanted, require_all: bool = True) -> list[str]:
    present: set[str] = set()
    for _, row in rows:
        present.update(row)
    if wanted:
        missing = [f for f in wanted if f not in present]
        if missing and (require_all or len(missing) == len(wanted)):
            raise DataError(f"{path}: no row has caption field(s) {missing}; fields present: {sorted(present)}")
        return [f for f in wanted if f in present]
    dreamlip = [f for f in DREAMLIP_FIELDS if f in present]
    if dreamlip:
        return dreamlip
    for name in GENERIC_FIELDS:
        if name in present:
            return [name]
    raise DataError(f"{path}: no caption field found (looked for {list(DREAMLIP_FIELDS + GENERIC_FIELDS)}); "
                    f"fields present: {sorted(present)}; set the caption fields explicitly")


def _captions(row: dict, fields: list[str], where: str, stats: ReadStats) -> tuple[list[str], list[str]] | None:
    """The row's usable captions in field order (stripped, non-empty, distinct, clipped),
    and the source label of each."""
    captions: list[str] = []
    sources: list[str] = []
    for name in fields:
        values = row.get(name)
        for position, value in enumerate(_as_list(values)):
            if isinstance(value, dict):  # Karpathy sentences: {"raw": ..., "tokens": [...]}
                value = value.get("raw")
            if not isinstance(value, str):
                if value is not None:
                    stats.skip("caption_not_text", where)
                    return None
                continue
            caption = value.strip()
            if not caption:
                stats.fix("empty_dropped", where)
            elif caption in captions:
                stats.fix("duplicate_dropped", where)
            else:
                if len(caption) > MAX_CAPTION_CHARS:
                    caption = caption[:MAX_CAPTION_CHARS]
                    stats.fix(f"clipped_to_{MAX_CAPTION_CHARS}_chars", where)
                captions.append(caption)
                sources.append(f"{name}.{position}" if isinstance(values, list) else name)
    return captions, sources


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _record_id(row: dict, id_field: str, has_ids: bool, index: int, path: Path, where: str) -> str:
    if not has_ids:
        return str(row.get("image_id", row.get("cocoid", index)))  # Karpathy files: image ids, else position
    if id_field not in row or row[id_field] in (None, ""):
        raise DataError(f"{path}: {where}: no {id_field!r} (other rows have one)")
    return str(row[id_field])
