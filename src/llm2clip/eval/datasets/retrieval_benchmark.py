"""A retrieval benchmark: images, texts, and which image each text describes.

Every reader turns its file layout into a list of entries (an image reference as written
in the file, that image's captions, and where in the file the entry came from) and hands
them to `build_benchmark`, which does what all formats share: resolve image paths inside
the image root, drop empty captions, merge repeated images, check that the images exist,
and refuse an empty result. Skips are counted per reason in `skipped`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple

from ...data.image_paths import resolve_image_path
from ...data.text_file import has_bad_bytes
from ...errors import DataError

MISSING_EXAMPLES = 5  # missing image paths named in the error message


@dataclass
class RetrievalBenchmark:
    name: str
    image_paths: list[Path]  # absolute, resolved
    texts: list[str]
    text_to_image: list[int]  # image index of each text; any number of texts per image
    language: str | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.text_to_image):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(self.text_to_image)} image indices")

    def describe(self) -> str:
        """One line: `flickr30k: 1000 images, 5000 texts (en); skipped 2 empty_caption`."""
        text = f"{self.name}: {len(self.image_paths)} images, {len(self.texts)} texts"
        if self.language:
            text += f" ({self.language})"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return text


class Entry(NamedTuple):
    image: str  # the image reference as written in the file, relative to the image root
    captions: list  # that image's captions (strings; anything else is a format error)
    where: str  # `file: row 3`, for messages


def build_benchmark(name: str, source: Path, root: Path, entries: Iterable[Entry], *,
                    language: str | None = None, skip_missing: bool = False, limit: int | None = None,
                    skipped: dict[str, int] | None = None) -> RetrievalBenchmark:
    """The benchmark of the first `limit` entries (all when None), images under `root`.

    `limit` counts entries of the file, before missing images are dropped: a benchmark
    defined as "the first N" stays those N (minus the missing), never shifts to later rows.
    Missing images raise a DataError naming `source` unless `skip_missing`.
    """
    skipped = dict(skipped or {})
    images: dict[Path, int] = {}  # resolved path -> image index (a repeated image is one image)
    texts: list[str] = []
    owners: list[int] = []
    for number, entry in enumerate(entries):
        if limit is not None and number >= limit:
            break
        path = resolve_image_path(root, entry.image, entry.where)
        captions = _clean_captions(entry, skipped)
        if not captions:
            _count(skipped, "image_without_caption")
            continue
        index = images.setdefault(path, len(images))
        texts += captions
        owners += [index] * len(captions)
    paths = list(images)
    paths, texts, owners = _drop_missing(source, root, paths, texts, owners, skip_missing, skipped)
    if not paths or not texts:
        raise DataError(f"{source}: empty benchmark, no image with a usable caption"
                        + (f" (skipped: {skipped})" if skipped else ""))
    return RetrievalBenchmark(name, paths, texts, owners, language, skipped)


def _clean_captions(entry: Entry, skipped: dict[str, int]) -> list[str]:
    """The entry's non-empty captions, stripped; empty and non-UTF-8 ones counted."""
    kept = []
    for caption in entry.captions:
        if not isinstance(caption, str):
            raise DataError(f"{entry.where}: caption is {type(caption).__name__}, expected text")
        caption = caption.strip()
        if not caption:
            _count(skipped, "empty_caption")
        elif has_bad_bytes(caption):
            _count(skipped, "not_utf8_caption")
        else:
            kept.append(caption)
    return kept


def _drop_missing(source: Path, root: Path, paths: list[Path], texts: list[str], owners: list[int],
                  skip_missing: bool, skipped: dict[str, int]):
    """Remove images that are not files (and their texts), or raise naming the first few."""
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    if not missing:
        return paths, texts, owners
    if not skip_missing:
        examples = ", ".join(str(paths[i]) for i in missing[:MISSING_EXAMPLES])
        raise DataError(f"{source}: {len(missing)} of {len(paths)} images missing under {Path(root).resolve()}, "
                        f"e.g. {examples} (skip_missing=True drops them, counted)")
    gone = set(missing)
    new_index, kept_paths = {}, []
    for i, path in enumerate(paths):
        if i not in gone:
            new_index[i] = len(kept_paths)
            kept_paths.append(path)
    kept = [(t, new_index[o]) for t, o in zip(texts, owners) if o not in gone]
    skipped["missing_image"] = skipped.get("missing_image", 0) + len(missing)
    skipped["text_of_missing_image"] = skipped.get("text_of_missing_image", 0) + len(texts) - len(kept)
    return kept_paths, [t for t, _ in kept], [o for _, o in kept]


def _count(skipped: dict[str, int], reason: str, n: int = 1) -> None:
    skipped[reason] = skipped.get(reason, 0) + n
