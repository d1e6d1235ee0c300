"""Showing search results: an HTML gallery page and a PNG contact sheet.

The page is static HTML (no script): per query, its text (and the model's name when
several models are compared) above its ranked thumbnails with their scores and keys. The
thumbnails are PNG files written next to the page in `<page name>_files/`, so the page
opens from disk in any browser, also for images inside tar shards.
"""
from __future__ import annotations

import hashlib
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..atomic_file import atomic_write_bytes, atomic_write_text
from .index import Hit
from .sources import load_ref

THUMB = 160


@dataclass
class QueryResult:
    query: str  # the text (or "image: <path>")
    hits: list[Hit]
    label: str | None = None  # the model's name, when several are shown


def thumbnail(hit: Hit, size: int = THUMB) -> Image.Image | None:
    """The hit's image shrunk to fit size x size, or None when it can no longer be read."""
    try:
        image = load_ref(hit.ref())
    except ValueError:  # ImageError: moved or deleted since it was indexed
        return None
    image.thumbnail((size, size), Image.BICUBIC)
    return image


def write_gallery(out_html: str | os.PathLike, results: Sequence[QueryResult], title: str = "llm2clip search") -> Path:
    """The gallery page at `out_html` and its thumbnails in `<stem>_files/`; returns the page."""
    out_html = Path(out_html)
    files = out_html.with_name(out_html.stem + "_files")
    files.mkdir(parents=True, exist_ok=True)
    sections = []
    for result in results:
        figures = []
        for hit in result.hits:
            name = hashlib.sha1(f"{hit.path}#{hit.member}".encode()).hexdigest()[:16] + ".png"
            image = thumbnail(hit)
            if image is not None and not (files / name).is_file():
                atomic_write_bytes(files / name, _png(image))
            source = f'<img src="{html.escape(files.name)}/{name}" alt="{html.escape(hit.key)}">' if image else \
                '<div class="missing">image not readable</div>'
            figures.append(f'<figure data-rank="{hit.rank}" data-score="{hit.score:.4f}">{source}'
                           f'<figcaption><b>#{hit.rank}</b> <span class="score">{hit.score:.3f}</span><br>'
                           f'<span class="key">{html.escape(hit.key)}</span></figcaption></figure>')
        label = f'<span class="model">{html.escape(result.label)}</span> ' if result.label else ""
        sections.append(f'<section><h2>{label}<q>{html.escape(result.query)}</q></h2>'
                        f'<div class="hits">{"".join(figures) or "<p>no results</p>"}</div></section>')
    atomic_write_text(out_html, _PAGE.format(title=html.escape(title), body="\n".join(sections)))
    return out_html


def write_contact_sheet(out_png: str | os.PathLike, results: Sequence[QueryResult], thumb: int = 128,
                        text_width: int = 300) -> Path:
    """One row per result: the (wrapped) query and model name, then the thumbnails with scores."""
    columns = max((len(r.hits) for r in results), default=1)
    row_height, pad = thumb + 24, 8
    sheet = Image.new("RGB", (text_width + columns * (thumb + pad) + pad, pad + len(results) * (row_height + pad)),
                      "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=13)
    for row, result in enumerate(results):
        top = pad + row * (row_height + pad)
        text = (f"[{result.label}] " if result.label else "") + result.query
        draw.multiline_text((pad, top), _wrap(draw, text, font, text_width - 2 * pad, row_height // 16), font=font,
                            fill="black")
        for column, hit in enumerate(result.hits):
            left = text_width + column * (thumb + pad)
            image = thumbnail(hit, thumb)
            if image is not None:
                sheet.paste(image, (left + (thumb - image.width) // 2, top + (thumb - image.height) // 2))
            draw.text((left, top + thumb + 4), f"#{hit.rank}  {hit.score:.3f}", font=font, fill="black")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_png, _png(sheet))
    return out_png


def _wrap(draw, text: str, font, width: int, max_lines: int) -> str:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    lines.append(line)
    return "\n".join(lines[:max_lines - 1] + [lines[max_lines - 1] + " ..."] if len(lines) > max_lines else lines)


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; background: #fafafa; }}
section {{ margin-bottom: 20px; }}
h2 {{ font-size: 15px; font-weight: normal; max-width: 1100px; }}
.model {{ font-weight: bold; }}
.hits {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; width: 164px; background: white; border: 1px solid #ddd; padding: 4px; }}
figure img {{ display: block; margin: auto; max-width: 160px; max-height: 160px; }}
figcaption {{ font-size: 12px; overflow-wrap: anywhere; }}
.missing {{ height: 160px; color: #a00; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""
