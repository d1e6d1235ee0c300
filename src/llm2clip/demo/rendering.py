"""Drawing the demo's scenes with Debian's Noto Color Emoji font, and writing a dataset
folder (PNGs + captions.jsonl)."""
from __future__ import annotations

import functools
import io
import json
import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..atomic_file import atomic_write_bytes, atomic_write_text
from .emoji_pool import BACKGROUNDS, GRID
from .scenes import EmojiScene, image_relpath


# Fraction of a grid cell that the emoji's longer side fills.
_SIZE_FRACTION = {"small": 0.55, "large": 0.92}

FONT_ENV = "LLM2CLIP_EMOJI_FONT"
DEBIAN_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
_FONT_SIZE = 109  # the only size the font's colour bitmaps (CBDT) come in


def font_path() -> Path:
    """$LLM2CLIP_EMOJI_FONT, else the Debian font; a clear error if neither exists."""
    candidate = Path(os.environ.get(FONT_ENV) or DEBIAN_FONT)
    if not candidate.is_file():
        raise FileNotFoundError(
            f"Noto Color Emoji font not found at {candidate}. Install the Debian package "
            f"`fonts-noto-color-emoji` (scripts/system-deps.sh does) or point ${FONT_ENV} "
            f"at NotoColorEmoji.ttf.")
    return candidate


@functools.lru_cache(maxsize=4)
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, _FONT_SIZE)


@functools.lru_cache(maxsize=1024)
def emoji_glyph(char: str) -> Image.Image:
    """The emoji as an RGBA image at the font's native size, cropped to its pixels."""
    font = _font(str(font_path()))
    left, top, right, bottom = font.getbbox(char)
    canvas = Image.new("RGBA", (right + 8, bottom + 8), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), char, font=font, embedded_color=True)
    # Drawing onto transparent black leaves the edge colours multiplied by their alpha;
    # read them back as premultiplied ("RGBa") so pasting gives no dark fringe.
    canvas = Image.frombytes("RGBa", canvas.size, canvas.tobytes()).convert("RGBA")
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise ValueError(f"the emoji font has no glyph for {char!r}")
    return canvas.crop(box)


@functools.lru_cache(maxsize=4096)
def _scaled_glyph(char: str, longest_side: int) -> Image.Image:
    glyph = emoji_glyph(char)
    scale = longest_side / max(glyph.size)
    size = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
    return glyph.resize(size, Image.LANCZOS)


def render_scene(scene: EmojiScene, size: int = 224) -> Image.Image:
    """The scene as an RGB image: each emoji centred in its grid cell at its size."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    cell = size / GRID
    for char, (row, col), obj_size in zip(scene.emojis, scene.layout, scene.sizes):
        glyph = _scaled_glyph(char, max(1, round(cell * _SIZE_FRACTION[obj_size])))
        x = round((col + 0.5) * cell - glyph.width / 2)
        y = round((row + 0.5) * cell - glyph.height / 2)
        image.paste(glyph, (x, y), mask=glyph)
    return image




def write_image_dataset(scenes: Sequence[EmojiScene], out_dir: str | os.PathLike,
                        size: int = 224) -> Path:
    """PNGs under out_dir/images/ plus out_dir/captions.jsonl; returns the JSONL path.

    Resumable: images that already exist are kept. Every file is written to a temporary
    name first and renamed, so an interrupted run never leaves a half-written file.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for scene in scenes:
        target = out / image_relpath(scene)
        if not target.exists():
            png = io.BytesIO()
            render_scene(scene, size).save(png, format="PNG")
            atomic_write_bytes(target, png.getvalue())
    index = out / "captions.jsonl"
    atomic_write_text(index, "".join(json.dumps(_jsonl_row(scene), ensure_ascii=False) + "\n" for scene in scenes))
    return index


def _jsonl_row(scene: EmojiScene) -> dict:
    # Captions are top-level fields (as in DreamLIP-style rows); the scene layout is kept
    # apart under "meta" so that no reader mistakes it for a caption.
    meta = {"emojis": scene.emojis, "names": scene.names, "layout": [list(c) for c in scene.layout],
            "sizes": scene.sizes, "background": scene.background}
    return {"id": scene.id, "image": image_relpath(scene), **scene.captions, "meta": meta}
