"""Reading a data file's text so that one bad byte costs one row, not the whole file.

The file is decoded as UTF-8 with `surrogateescape`: undecodable bytes become lone
surrogates that the readers detect per row (and skip, counted) instead of failing.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import DataError

_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def read_text(path: str | os.PathLike) -> str:
    """The whole file as text; a clear DataError when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a data file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from err
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (Excel writes one)
        raw = raw[3:]
    return raw.decode("utf-8", errors="surrogateescape")


def has_bad_bytes(text: str) -> bool:
    """True when the text held bytes that are not UTF-8."""
    return _ESCAPED_BYTE.search(text) is not None
