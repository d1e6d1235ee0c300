"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never
half of one. Every cache, checkpoint file, config and result goes through here, and every
finished model folder through `atomic_folder`."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a hidden temporary name; it replaces `path` only once the block
    has finished. A failure (disk full, a kill) leaves the previous `path` whole; a WriteError
    says so.

        with atomic_folder(out / "final") as staging:
            model.save_pretrained(staging)
    """
    path = Path(path)
    staging, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
    try:
        staging.mkdir(parents=True)
        yield staging
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise WriteError(f"could not write {path} ({err.strerror or err}); "
                         "the previous version, if any, is untouched") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)  # a folder cannot be renamed over a non-empty one: step it aside
    os.replace(staging, path)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(path.parent)


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
