"""The images an index is built from: a folder (searched recursively) or webdataset shards.

Each image is an `ImageRef`: its `key` is what search results print and the index stores
(the path relative to the folder, or `<shard>#<member>` for a shard member), and `stamp`
is what the index plan remembers of it (file size and modification time, or the member's
size), so a resumed build notices an image that changed under it. The list is sorted
(a folder) or in shard order, so the same images always give the same plan.
"""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from ..data.errors import DataError
from ..vision.image_loading import ImageError, decode_image, load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SHARD_SEPARATOR = "#"


@dataclass(frozen=True)
class ImageRef:
    key: str  # printed in results: the relative path, or "<shard>#<member>"
    stamp: str  # size and mtime (a file) or size (a shard member): a changed image changes the plan
    path: str  # the file, or the shard
    member: str | None = None  # the tar member inside `path`, for shards


def list_images(source: str | os.PathLike | list) -> list[ImageRef]:
    """Every image under a folder, in webdataset shards (`x.tar`, `x-{000..009}.tar`), or of
    a list of image files (kept in its order; a missing file becomes a skip when read)."""
    if isinstance(source, (list, tuple)):
        return [_file_ref(str(path), Path(path)) for path in source]
    text = str(source)
    if Path(text).is_dir():
        return _folder_images(Path(text))
    if ".tar" in text:
        return _shard_images(text)
    raise DataError(f"{source}: neither a folder of images nor webdataset shards (*.tar)")


def _folder_images(root: Path) -> list[ImageRef]:
    refs = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # hidden folders: caches, .git
        for name in filenames:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                path = Path(dirpath) / name
                refs.append(_file_ref(path.relative_to(root).as_posix(), path))
    if not refs:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder or below")
    return sorted(refs, key=lambda ref: ref.key)


def _file_ref(key: str, path: Path) -> ImageRef:
    try:
        stat = path.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        stamp = "unreadable"
    return ImageRef(key, stamp, str(path.resolve()))


def describe(source) -> str:
    """What plan.json says the images are."""
    if isinstance(source, (list, tuple)):
        return f"a list of {len(source)} image files"
    return str(Path(source).resolve()) if Path(str(source)).is_dir() else str(source)


def _shard_images(spec: str) -> list[ImageRef]:
    from ..data.webdataset_source import expand_shards

    refs = []
    for shard in expand_shards(spec):
        if not Path(shard).is_file():
            raise DataError(f"{shard}: no such shard (index reads local .tar files)")
        try:
            with tarfile.open(shard, "r:*") as tar:  # headers only: tarfile seeks over the data
                members = [m for m in tar.getmembers() if m.isreg() and m.name.lower().endswith(IMAGE_SUFFIXES)]
        except (OSError, tarfile.TarError) as err:
            raise DataError(f"{shard}: unreadable shard ({err})") from None
        resolved = str(Path(shard).resolve())
        refs += [ImageRef(f"{shard}{SHARD_SEPARATOR}{m.name}", str(m.size), resolved, m.name) for m in members]
    if not refs:
        raise DataError(f"{spec}: no image members in these shards")
    return refs


def load_ref(ref: ImageRef) -> Image.Image:
    """The image as RGB; ImageError (naming it) if it cannot be read."""
    if ref.member is None:
        return load_image(ref.path)
    try:
        with tarfile.open(ref.path, "r:*") as tar:
            data = tar.extractfile(ref.member).read()
    except (OSError, tarfile.TarError, KeyError, AttributeError) as err:
        raise ImageError(f"{ref.key}: unreadable shard member ({err})") from None
    return decode_image(data, ref.key)


def iter_loaded(refs: list[ImageRef]) -> Iterator[tuple[ImageRef, Image.Image | None, str | None]]:
    """(ref, image, None) or (ref, None, why it was skipped), in order. Shard members are read
    in one pass per shard."""
    open_tars: dict[str, tarfile.TarFile] = {}
    try:
        for ref in refs:
            try:
                if ref.member is None:
                    yield ref, load_image(ref.path), None
                    continue
                tar = open_tars.get(ref.path)
                if tar is None:
                    for old in open_tars.values():
                        old.close()
                    open_tars = {ref.path: tarfile.open(ref.path, "r:*")}
                    tar = open_tars[ref.path]
                handle = tar.extractfile(ref.member)
                if handle is None:
                    raise ImageError(f"{ref.key}: not a regular member")
                yield ref, decode_image(handle.read(), ref.key), None
            except ImageError as err:
                yield ref, None, str(err)
            except (OSError, tarfile.TarError, KeyError) as err:
                yield ref, None, f"{ref.key}: unreadable ({err})"
    finally:
        for tar in open_tars.values():
            tar.close()
