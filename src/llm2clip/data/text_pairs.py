"""Pure-text pairs for stage 1: JSONL rows `{query, positive[, negative]}`.

Mixed into the caption pairs at a ratio (paper §3.1 adds text-only retrieval data).
Rows missing a field, with an empty text, or with bad JSON/bytes are skipped and counted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .read_stats import ReadStats
from .records import iter_jsonl


@dataclass(frozen=True)
class TextPair:
    query: str
    positive: str
    negative: str | None = None


def read_text_pairs(path: str | os.PathLike) -> tuple[list[TextPair], ReadStats]:
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".jsonlines"):
        raise DataError(f"{path}: text pairs must be JSONL ({{query, positive[, negative]}} per line)")
    stats = ReadStats(str(path))
    pairs: list[TextPair] = []
    for where, row in iter_jsonl(path, stats):
        texts = {key: row.get(key) for key in ("query", "positive", "negative")}
        if not all(isinstance(texts[k], str) and texts[k].strip() for k in ("query", "positive")):
            stats.skip("missing_query_or_positive", where)
            continue
        negative = texts["negative"].strip() if isinstance(texts["negative"], str) else None
        pairs.append(TextPair(texts["query"].strip(), texts["positive"].strip(), negative or None))
    stats.kept = len(pairs)
    if not pairs:
        raise DataError(f"{path}: no usable text pairs ({stats.summary()})")
    return pairs, stats
