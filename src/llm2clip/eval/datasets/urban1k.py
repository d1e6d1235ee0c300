"""Urban1k (Long-CLIP): 1000 urban photos with one long caption each (1:1).

Layout: `Urban1k/image/{i}.jpg` and `Urban1k/caption/{i}.txt`, matched by file stem and
ordered numerically (1, 2, ..., 10, not 1, 10, 2). The caption files drive the benchmark:
an image without a caption file is counted, a caption without its image is a missing image.
"""
from __future__ import annotations

from pathlib import Path

from ...data.text_file import read_text
from ...errors import DataError
from .retrieval_benchmark import Entry, RetrievalBenchmark, build_benchmark


def read_urban1k(folder, image_root=None, *, skip_missing: bool = False, limit: int | None = None,
                 name: str = "urban1k") -> RetrievalBenchmark:
    """`folder/caption/*.txt` with the same-stem image in `image_root` (default `folder/image`)."""
    folder = Path(folder)
    caption_dir = folder / "caption"
    if not caption_dir.is_dir():
        raise DataError(f"{folder}: not an Urban1k folder, expected caption/{{i}}.txt and image/{{i}}.jpg in it")
    image_dir = Path(image_root) if image_root else folder / "image"
    images = {p.stem: p.name for p in image_dir.iterdir() if p.is_file()} if image_dir.is_dir() else {}
    captions = sorted(caption_dir.glob("*.txt"), key=lambda p: numeric_stem_key(p.stem))
    entries = [Entry(images.get(p.stem, f"{p.stem}.jpg"), [read_text(p)], str(p)) for p in captions]
    without_caption = len(set(images) - {p.stem for p in captions})
    skipped = {"image_without_caption": without_caption} if without_caption else {}
    return build_benchmark(name, folder, image_dir, entries, language="en", skip_missing=skip_missing,
                           limit=limit, skipped=skipped)


def numeric_stem_key(stem: str) -> tuple:
    """Numbers in numeric order first, then other names alphabetically."""
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)
