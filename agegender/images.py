"""Image files to uint8 RGB squares: any mode, bit depth or shape, one function each."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import os
import threading
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image

# Decoded images hold at most 40 megapixels (160 MB as RGB): a 12000x12000 PNG (144 MP,
# 700 MB decoded) is refused rather than a memory spike. A JPEG decodes reduced (libjpeg's
# 1/2, 1/4 or 1/8 scale), so phone photos up to 200 MP are read in the same bound.
MAX_PIXELS = 40_000_000
MAX_JPEG_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_JPEG_PIXELS // 2  # PIL refuses twice this when it opens a file
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # we check below
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


BOMB = (
    f"too large: over {MAX_JPEG_PIXELS // 1_000_000} MP, refused as a possible decompression "
    f"bomb; make it smaller"
)  # PIL's own refusal when it opens a file, before anything is decoded


class TooLarge(ValueError):
    """An image over the pixel limits: its one-line reason is the message."""


def too_large(width: int, height: int) -> TooLarge:
    return TooLarge(
        f"too large: {width}x{height} pixels, over the {MAX_PIXELS // 1_000_000} MP limit "
        f"(JPEG photos up to {MAX_JPEG_PIXELS // 1_000_000} MP are read reduced); make it smaller"
    )


def check_size(width: int, height: int, limit: int = MAX_PIXELS) -> None:
    if width * height > limit:
        raise too_large(width, height)


def reduced_size(image: Image.Image, want: int) -> tuple[int, int]:
    """The size an opened image decodes at: a JPEG at the smallest of libjpeg's scales that
    still gives `want` pixels a side and holds at most MAX_PIXELS; any other format whole."""
    width, height = image.size
    if image.format != "JPEG":
        return width, height
    keeps_detail = max([a for a in (1, 2, 4, 8) if a <= min(width, height) // want] or [1])
    fits = next((a for a in (1, 2, 4, 8) if width * height <= MAX_PIXELS * a * a), 8)
    scale = max(keeps_detail, fits)
    return max(1, width // scale), max(1, height // scale)


def load_reduced(image: Image.Image, want: int) -> None:
    """Decode an opened image at its reduced_size in bounded memory. Raises TooLarge."""
    if image.format == "JPEG":
        check_size(*image.size, MAX_JPEG_PIXELS)
        image.draft("RGB", reduced_size(image, want))
    check_size(*image.size)
    image.load()


DECODE_BUDGET = MAX_PIXELS  # pixels being decoded at once, over all threads
_budget = threading.Condition()
_in_use = [0]


@contextlib.contextmanager
def decode_budget(pixels: int) -> Iterator[None]:
    """Hold `pixels` of DECODE_BUDGET while an image is decoded and searched: however many
    threads decode (predict --workers), their images hold at most 40 MP at once: a 36 MP
    16-bit PNG takes ~1 GB on its way through the detector, four at once took 6 GB."""
    pixels = min(pixels, DECODE_BUDGET)
    with _budget:
        _budget.wait_for(lambda: _in_use[0] + pixels <= DECODE_BUDGET)
        _in_use[0] += pixels
    try:
        yield
    finally:
        if pixels > TRIM_AFTER:
            _trim()
        with _budget:
            _in_use[0] -= pixels
            _budget.notify_all()


TRIM_AFTER = 4_000_000  # pixels: a larger image's freed memory goes back to the system


def _trim() -> None:
    """glibc keeps what each thread freed in that thread's own arena: four decoding threads
    held 3.5 GB after 16-bit 36 MP PNGs, one held 2 GB. malloc_trim hands it back."""
    if _libc and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c")) if os.name == "posix" else None
except OSError:  # no C library to load (an unusual platform): nothing to trim
    _libc = None


def to_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image as 8 bits, scaled by its own range; any
    other image as it is.

    PIL's convert("RGB") clips such modes at 255, which turns most 16-bit faces white.
    A flat image (no range) becomes mid-grey. Integer images are scaled by PIL's point(),
    in 4 bytes a pixel: a 36 MP 16-bit PNG once took 1.2 GB of float64 temporaries.
    """
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    if image.mode != "F":
        image = image.convert("I")
        low, high = image.getextrema()
        if high <= low:
            return Image.new("L", image.size, 128)
        scale = 255 / (high - low)
        return image.point(lambda v: v * scale + (0.5 - low * scale)).convert("L")
    pixels = np.asarray(image, dtype=np.float32).copy()
    finite = np.isfinite(pixels)
    low, high = (pixels[finite].min(), pixels[finite].max()) if finite.any() else (0.0, 0.0)
    if not high > low:
        return Image.new("L", image.size, 128)
    np.nan_to_num(pixels, copy=False, nan=low, posinf=high, neginf=low)
    pixels -= low
    pixels *= 255 / (high - low)
    np.round(pixels, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB as a viewer shows it: transparent pixels over white.

    The detector and the models both see this image, so a transparent area is white for
    both (convert("RGB") alone would show the detector the colours hidden under it)."""
    image = to_8_bits(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def to_rgb_square(image: Image.Image, size: int) -> np.ndarray:
    """Any PIL image (grayscale, 16-bit, CMYK, alpha, palette, any shape) -> uint8 (S, S, 3).

    A non-square image is centre-cropped to a square first, so faces keep their shape.
    """
    image = to_rgb(image)
    width, height = image.size
    if width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def decode(data: bytes, size: int) -> np.ndarray | None:
    """Decode image bytes to uint8 (size, size, 3); None for empty, truncated or non-images."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            load_reduced(image, size)  # JPEG: let libjpeg decode at a smaller scale
            return to_rgb_square(image, size)
    except Exception:  # a corrupt file can make any decoder step fail; it is just unreadable
        return None
