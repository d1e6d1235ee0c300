"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never
half of one. Every cache, checkpoint file, config and result goes through here."""
from __future__ import annotations

import os
from pathlib import Path


class WriteError(RuntimeError):
    """A file could not be written (disk full, permissions, ...); the message names it and
    says that what was there before is untouched."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes, suffix: str = ".tmp") -> None:
    """Write to `<name><suffix>`, fsync, rename over `path`, then fsync the folder. On a
    failed write (e.g. disk full) the temporary file is removed and `path` keeps its old
    content; a WriteError says so."""
    path = Path(path)
    tmp = path.with_name(path.name + suffix)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"could not write {path} ({err.strerror or err}); "
                         "the previous version, if any, is untouched") from err
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, suffix: str = ".tmp") -> None:
    atomic_write_bytes(path, text.encode("utf-8"), suffix)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (not possible on every OS/filesystem: best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
