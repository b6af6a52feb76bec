"""Decoding one image file into a clean 8-bit RGB PIL image, or a recorded reason why not.

Rules (documented in the README, tested in ``tests/test_images.py``):

* Only formats in :data:`ALLOWED_FORMATS` are decoded; anything else, whatever its
  extension says, is rejected by what Pillow detects in the bytes.
* Zero-byte, truncated and non-image files are rejected with the reason.
* Images larger than ``max_pixels`` (Pillow's own ``Image.MAX_IMAGE_PIXELS`` by
  default) are rejected from the header alone, before any pixel is decoded, so a
  decompression bomb costs nothing.
* Inside :func:`draft_decoding` (``--decode draft``), a JPEG at least twice the
  requested size in both dimensions is decoded straight at 1/2, 1/4 or 1/8 scale
  (Pillow's ``Image.draft``, DCT-domain scaling), never below that size.
* EXIF orientation is applied; palette, grayscale, CMYK and 16-bit images are
  converted to 8-bit RGB; images with alpha (RGBA, LA, PA, palette transparency)
  are composited onto :data:`ALPHA_BACKGROUND` (white), the convention of most
  image datasets whose transparent regions are paper/background.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.errors import BadImageError

__all__ = ["ALLOWED_FORMATS", "IMAGE_EXTENSIONS", "ALPHA_BACKGROUND", "load_image", "to_rgb", "draft_decoding"]

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "MPO"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
ALPHA_BACKGROUND = (255, 255, 255)


# The smallest (width, height) a draft decode may produce; None: decode at full size.
# A context variable, not an argument, so every source's loader (folder, CSV, tar,
# Parquet) honours it without each Source growing a parameter.
_DRAFT: ContextVar[tuple[int, int] | None] = ContextVar("featx_jpeg_draft", default=None)


@contextlib.contextmanager
def draft_decoding(size: tuple[int, int] | None) -> Iterator[None]:
    """Within the block, :func:`load_image` decodes large JPEGs at reduced scale, at least ``size``."""
    token = _DRAFT.set(None if size is None else (int(size[0]), int(size[1])))
    try:
        yield
    finally:
        _DRAFT.reset(token)


def _default_max_pixels() -> int:
    return int(Image.MAX_IMAGE_PIXELS or 2**31)


def load_image(source: str | os.PathLike | bytes, max_pixels: int | None = None) -> Image.Image:
    """Open, validate and fully decode an image; raise :class:`BadImageError` with the reason."""
    limit = _default_max_pixels() if max_pixels is None else int(max_pixels)
    if isinstance(source, bytes):
        if not source:
            raise BadImageError("empty file (0 bytes)")
        handle = io.BytesIO(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise BadImageError(f"cannot read file: {exc.strerror or exc}") from None
        if size == 0:
            raise BadImageError("empty file (0 bytes)")
        handle = path
    try:
        # Decompression-bomb checks are ours (below), from the header alone; silence
        # Pillow's own warning/error so the reason we record is the same either way.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(handle)
            if img.format not in ALLOWED_FORMATS:
                raise BadImageError(f"format {img.format} is not in the allowed list {sorted(ALLOWED_FORMATS)}")
            width, height = img.size
            if width * height > limit:
                raise BadImageError(
                    f"image is {width}x{height} = {width * height} pixels, over the {limit}-pixel "
                    "limit (possible decompression bomb)"
                )
            draft = _DRAFT.get()
            if draft is not None and img.format == "JPEG":
                # Scales by 1/2, 1/4 or 1/8 only while both sides stay >= draft, so an image
                # under twice the size decodes exactly as without it.
                img.draft(img.mode, draft)
            img.load()
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise BadImageError("not an image (no decoder recognises the bytes)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(f"cannot decode image: {exc}") from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode to 8-bit RGB (alpha composited on white)."""
    # A corrupt EXIF block should not lose the pixels: keep the image as stored.
    with contextlib.suppress(Exception):
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _high_depth_to_l(img)
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255 instead of scaling, which turns
    # almost every 16-bit image white; scale by the bit depth instead.
    arr = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(arr, 0.0, 1.0) * 255.0 if arr.max(initial=0.0) <= 1.0 else np.clip(arr, 0, 255)
    else:
        arr = arr.astype(np.int64)
        scaled = arr / 257.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else arr
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
