"""JSON, JSON Lines, and the first items of a huge JSON list, with errors naming the file."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from ...data.text_file import read_text
from ...errors import DataError

_NON_SPACE = re.compile(r"\S")
CHUNK_CHARS = 1 << 20  # characters read at a time by first_json_list_items


def load_json(path: Path) -> Any:
    """The parsed file; a DataError naming the file (and hinting at JSON Lines) if it is not JSON."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        hint = " (one JSON object per line? that is a JSON Lines file)" if err.msg == "Extra data" else ""
        raise DataError(f"{path}: not valid JSON, {err.msg} at line {err.lineno} column {err.colno}{hint}") from None


def iter_jsonl_objects(path: Path) -> Iterator[tuple[str, dict]]:
    """(`file: line N`, object) per non-blank line; a bad line is a DataError naming it."""
    # split on "\n" only: str.splitlines would also cut at U+2028, which JSON strings may hold
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg}); expected one JSON object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: a JSON {type(row).__name__}, expected one object per line")
        yield where, row


def first_json_list_items(path: Path, n: int) -> list[Any]:
    """The first `n` items of a file holding one JSON list, reading only as far as needed.

    The ShareGPT4V caption file is ~1.2M items (GBs); the benchmark is its first 1000, so
    parsing it whole would cost minutes and many GB of memory for nothing.
    """
    path = Path(path)
    check_file(path)
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as file:
        text = _ChunkedText(file, CHUNK_CHARS)
        if text.peek() != "[":
            raise DataError(f"{path}: not a JSON list (expected '[' at the start)")
        text.pos += 1
        items: list[Any] = []
        while len(items) < n:
            c = text.peek()
            if c == "]":
                break
            if items:
                if c != ",":
                    raise DataError(f"{path}: item {len(items)}: expected ',' or ']' between list items")
                text.pos += 1
                c = text.peek()
            if c == "":
                raise DataError(f"{path}: ends inside the list after {len(items)} items (truncated?)")
            try:
                items.append(text.decode(decoder))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: item {len(items)}: not valid JSON ({err.msg})") from None
    return items


def check_file(path: Path) -> None:
    """A DataError naming the path when it is missing or a folder (as `read_text` would)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a data file")


class _ChunkedText:
    """A window on a text file that grows by chunks as the parser needs more."""

    def __init__(self, file, chunk_chars: int):
        self.file, self.chunk_chars = file, chunk_chars
        self.text, self.pos = "", 0

    def _fill(self) -> bool:
        more = self.file.read(self.chunk_chars)
        if not more:
            return False
        self.text = self.text[self.pos:] + more  # drop what was parsed already
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next non-space character (the position moves to it); "" at the end of the file."""
        while True:
            match = _NON_SPACE.search(self.text, self.pos)
            if match:
                self.pos = match.start()
                return self.text[self.pos]
            self.pos = len(self.text)
            if not self._fill():
                return ""

    def decode(self, decoder: json.JSONDecoder) -> Any:
        """The JSON value at the position; reads more while the value runs past the window."""
        while True:
            try:
                value, self.pos = decoder.raw_decode(self.text, self.pos)
                return value
            except json.JSONDecodeError:
                if not self._fill():
                    raise
