"""Image files to model inputs: the whole picture, or each face OpenCV finds in it."""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from agegender.errors import UserError
from agegender.utkface import to_rgb_square

DETECT_SIDE = 1024  # Haar detection runs on at most this many pixels a side: fast, finds faces
MARGIN = 0.4  # UTKFace's aligned crops hold about this much of the box side around the face
NO_FACE = "no face found"


@dataclass
class Face:
    """One thing to predict, or why there is nothing: a whole image or one detected face."""

    path: str
    pixels: dict[int, np.ndarray] | None = None  # model input side -> uint8 (S, S, 3)
    box: list[int] | None = None  # [x, y, w, h] in the image's pixels (the whole image's
    # without --detect-faces)
    index: int | None = None  # which face of the image (--detect-faces)
    error: str | None = None


_local = threading.local()  # one Haar cascade per decoding thread: OpenCV's is not thread-safe


def cascade():
    if not hasattr(_local, "cascade"):
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        _local.cascade = cv2.CascadeClassifier(path)
    return _local.cascade


def check_face_detector() -> None:
    """Fail before any work if --detect-faces cannot run."""
    try:
        import cv2
    except ImportError:
        raise UserError(
            '--detect-faces needs OpenCV: pip install -e ".[faces]" (opencv-python-headless)'
        ) from None
    if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 moved Haar cascades out
        raise UserError(
            f"--detect-faces: OpenCV {cv2.__version__} has no Haar cascades; "
            f'pip install "opencv-python-headless>=4.8,<5"'
        )
    if cascade().empty():
        raise UserError("--detect-faces: OpenCV's haarcascade_frontalface_default.xml is missing")


def detect(image: Image.Image) -> list[list[int]]:
    """Face boxes [x, y, w, h] in the image's pixels, left to right."""
    import cv2

    gray = np.asarray(image.convert("RGB").convert("L"))
    scale = min(1.0, DETECT_SIDE / max(gray.shape))
    if scale < 1:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    found = cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    boxes = [[round(v / scale) for v in box] for box in np.asarray(found).reshape(-1, 4)]
    return sorted(boxes, key=lambda b: b[0])


def crops(
    image: Image.Image, sizes: tuple[int, ...], faces: bool, path: str = "", ratio: float = 1.0
) -> list[Face]:
    """What the models take from one decoded image: the whole of it, or each face in it with
    a margin like the training crops'. `ratio` scales boxes back to full pixels when the
    image was decoded at a reduced scale."""
    if not faces:
        box = [0, 0, round(image.width * ratio), round(image.height * ratio)]
        return [Face(path, {s: to_rgb_square(image, s) for s in sizes}, box)]
    out = []
    for i, (x, y, w, h) in enumerate(detect(image)):
        m = MARGIN * max(w, h)
        left, top = max(0, round(x - m)), max(0, round(y - m))
        right, bottom = min(image.width, round(x + w + m)), min(image.height, round(y + h + m))
        crop = image.crop((left, top, right, bottom))
        box = [round(v * ratio) for v in (x, y, w, h)]
        out.append(Face(path, {s: to_rgb_square(crop, s) for s in sizes}, box, i))
    return out or [Face(path, error=NO_FACE)]


def read(path: str, sizes: tuple[int, ...], faces: bool) -> list[Face]:
    """Decode one file into what the models take: the whole image, or each face in it.

    JPEGs decode at a reduced scale where that still gives enough pixels (a 4000 px photo
    is read at 500 px for a 128 px model), and EXIF orientation is applied so phone
    photos are upright. Any failure is this file's error, never the run's.
    """
    want = DETECT_SIDE if faces else max(sizes)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would block for good
            return [Face(path, error="not a regular file")]
        with Image.open(path) as image:
            full_width = image.size[0]
            image.draft("RGB", (want, want))
            image.load()
            ratio = full_width / image.size[0]  # draft's scale, to report boxes in full pixels
            image = ImageOps.exif_transpose(image)
        return crops(image, sizes, faces, path, ratio)
    except FileNotFoundError:
        return [Face(path, error="no such file")]
    except UnidentifiedImageError:
        return [Face(path, error="not an image")]
    except Exception as error:  # a corrupt file can fail in any decoder step
        text = getattr(error, "strerror", None) or str(error)  # strerror: without the path
        reason = (text.strip().splitlines() or [type(error).__name__])[0][:200]
        return [Face(path, error=f"unreadable image ({reason})")]
