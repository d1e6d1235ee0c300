"""Opening training/eval images robustly: any mode becomes RGB, broken files a clear error.

CMYK, greyscale, palette, 16-bit and transparent images are converted (transparency is
composited on white, as a viewer shows it); EXIF orientation is applied. Corrupt,
truncated, zero-byte and missing files, and decompression bombs, raise ImageError
naming the file, which the stage-2 loader turns into a counted skip.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError

MAX_PIXELS = 89_478_485  # PIL's own bomb threshold (~ 9459 x 9459)


class ImageError(DataError):
    """An image file that cannot be used; the message names it."""


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image at `path` as a decoded RGB PIL image, upright per its EXIF orientation."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageError(f"{path}: empty file")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    return _decode(path, str(path), max_pixels)


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """`load_image` for bytes already in memory (a webdataset member); `name` labels errors."""
    if not data:
        raise ImageError(f"{name}: empty file")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it; below our limit, an error
            bomb = "error" if max_pixels <= (Image.MAX_IMAGE_PIXELS or max_pixels) else "ignore"
            warnings.simplefilter(bomb, Image.DecompressionBombWarning)
            with Image.open(source) as image:
                if image.width * image.height > max_pixels:
                    raise ImageError(f"{name}: {image.width}x{image.height} pixels exceeds the limit of {max_pixels}")
                image.load()  # decode now: truncation shows up here, not later
                return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name}: decompression bomb, exceeds the limit ({err})") from None
    except Image.DecompressionBombWarning as err:
        raise ImageError(f"{name}: decompression bomb, exceeds the limit of {max_pixels} ({err})") from None
    except Exception as err:  # noqa: BLE001 - PIL's decoders raise many types on corrupt data
        detail = str(err).replace(repr(source), "the data")  # no object address: messages stay reproducible
        raise ImageError(f"{name}: unreadable image ({type(err).__name__}: {detail})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit greyscale: rescale to 8 bits
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
