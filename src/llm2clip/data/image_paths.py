"""Image references in data files resolve inside one root folder, never outside it.

A dataset row is untrusted input: `../../etc/passwd` or an absolute path elsewhere must
not be read. Relative references resolve against the root (by default the data file's
folder); the resolved path must stay under the root.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError


def resolve_image_path(root: str | os.PathLike, reference: str, where: str) -> Path:
    """`root/reference`, refused with a DataError naming `where` if it leaves `root`."""
    if not reference or not reference.strip():
        raise DataError(f"{where}: empty image path")
    if "\0" in reference:  # no file system accepts it; os calls would raise a bare ValueError
        raise DataError(f"{where}: image path {reference!r} contains a NUL byte")
    root = Path(root).resolve()
    path = (root / reference).resolve()  # an absolute reference replaces root here
    if path != root and root not in path.parents:
        raise DataError(f"{where}: image path {reference!r} leaves the image root {root}")
    return path
