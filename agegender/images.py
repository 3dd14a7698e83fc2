"""Image files to uint8 RGB squares: any mode, bit depth or shape, one function each."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# PIL refuses images over twice this many pixels (DecompressionBombError): 40 megapixels,
# so a 12000x12000 PNG (144 MP, 700 MB decoded) is unreadable rather than a memory spike.
Image.MAX_IMAGE_PIXELS = 20_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def to_8_bits(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image as 8 bits, scaled by its own range; any
    other image as it is.

    PIL's convert("RGB") clips such modes at 255, which turns most 16-bit faces white.
    A flat image (no range) becomes mid-grey.
    """
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    pixels = np.asarray(image, dtype=np.float64)
    finite = pixels[np.isfinite(pixels)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    if high > low:
        scaled = (np.nan_to_num(pixels, nan=low, posinf=high, neginf=low) - low) / (high - low)
    else:
        scaled = np.full(pixels.shape, 0.5)
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8), "L")


def to_rgb_square(image: Image.Image, size: int) -> np.ndarray:
    """Any PIL image (grayscale, 16-bit, CMYK, alpha, palette, any shape) -> uint8 (S, S, 3).

    A non-square image is centre-cropped to a square first, so faces keep their shape.
    """
    image = to_8_bits(image)
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB")
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
            image.draft("RGB", (size, size))  # JPEG: let libjpeg decode at a smaller scale
            image.load()
            return to_rgb_square(image, size)
    except Exception:  # a corrupt file can make any decoder step fail; it is just unreadable
        return None
