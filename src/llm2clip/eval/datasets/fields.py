"""Checked access to a row's fields: a wrong shape is a DataError naming the row and key."""
from __future__ import annotations

from ...errors import DataError


def required(row, key: str, where: str):
    """`row[key]`, or a DataError naming the row and the key."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: a JSON {type(row).__name__}, expected an object with {key!r}")
    if key not in row:
        raise DataError(f"{where}: no {key!r} key (keys: {sorted(row)[:10]})")
    return row[key]


def text_field(value, key: str, where: str) -> str:
    """`value` if it is a string, else a DataError naming the row and key."""
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} is a JSON {type(value).__name__}, expected text")
    return value


def as_caption_list(value, key: str, where: str) -> list:
    """A caption field's captions: a string is one caption, a list is several."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise DataError(f"{where}: {key!r} is a JSON {type(value).__name__}, expected text or a list of texts")
