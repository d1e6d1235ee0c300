"""Output paths are checked before any work: a folder to write into that is a file, lies
under a file, or may not be written fails at once with a WriteError naming it, instead of
a traceback after hours of training or encoding."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .atomic_file import WriteError


def require_writable_folder(path: str | os.PathLike, what: str) -> Path:
    """Create folder `path` (and its parents) if needed and check that a file can be
    written in it; `what` names the setting in the message (e.g. "train.output_dir")."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker == path:
        raise WriteError(f"{what} {path} is a file, not a folder")
    if blocker is not None:
        raise WriteError(f"{what} {path} lies under {blocker}, which is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path, prefix=".llm2clip-write-test-")  # what a real write needs
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise WriteError(f"{what} {path}: cannot write there ({err.strerror or err})") from None
    return path


def require_writable_file(path: str | os.PathLike, what: str, inputs: tuple = ()) -> Path:
    """Check that file `path` can be written (its folder is created if needed) and is none
    of the command's `inputs` (which it would overwrite)."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{what} {path} is a folder, not a file")
    for source in inputs:
        if path.is_file() and Path(source).is_file() and os.path.samefile(path, source):
            raise WriteError(f"{what} {path} is also an input of this command ({source}); it would be overwritten")
    require_writable_folder(path.parent, f"the folder of {what} {path}:")
    return path
