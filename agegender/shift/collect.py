"""One pass over a user's labelled images: the face each image shows, and the models'
answers for it.

An image may show several faces (a labelled photo, or a false box on a sleeve): the face
the detector is surest of is the one its label describes. Images with no face found and
unreadable files are counted, never scored.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from agegender.errors import UserError
from agegender.serve.api import ensemble_weighting, predict_faces
from agegender.serve.faces import NO_FACE, Face, check_face_detector, read


@dataclass
class Collected:
    """Per labelled image (N): whether a face was read, and for those M faces their
    pixels at each model's input side and the models' raw answers."""

    found: np.ndarray  # (N,) bool
    face_score: np.ndarray  # (N,) the detector's score; NaN for crops or no face
    pixels: dict[int, np.ndarray]  # side -> (M, S, S, 3) uint8
    pred: np.ndarray  # (N, 2) raw age and P(female); NaN where no face was read
    errors: list[str]  # "path: why" for files that could not be read

    @property
    def no_face(self) -> int:
        return int((~self.found).sum()) - len(self.errors)


def best_face(faces: list[Face]) -> Face | None:
    """The face the detector is surest of (the image itself for a crop); None for none."""
    ok = [f for f in faces if f.error is None]
    return max(ok, key=lambda f: f.score or 0.0) if ok else None


def collect(
    paths: list[str],
    models: list,
    *,
    crops: bool,
    min_face_score: float = 0.0,
    flip: bool = True,
    batch_size: int = 64,
    workers: int | None = None,
) -> Collected:
    """Read every image (in a thread pool, in order), keep its best face, predict."""
    sizes = tuple(sorted({m.input_shape[1] for m in models}))
    if not crops:
        check_face_detector()
    chosen: list[Face] = []
    found = np.zeros(len(paths), bool)
    face_score = np.full(len(paths), np.nan)
    errors = []

    def one(path: str) -> list[Face]:
        return read(path, sizes, not crops, min_score=min_face_score)

    with ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:
        reading = tqdm(pool.map(one, paths), total=len(paths), unit=" images", desc="faces")
        for i, faces in enumerate(reading):
            face = best_face(faces)
            if face is None:
                if faces[0].error != NO_FACE:
                    errors.append(f"{faces[0].path}: {faces[0].error}")
                continue
            found[i] = True
            face_score[i] = np.nan if face.score is None else face.score
            chosen.append(face)
    if not chosen:
        raise UserError(
            f"no face found in any of the {len(paths)} images; for images that already are "
            f"face crops pass --crops"
        )
    pred = np.full((len(paths), 2), np.nan)
    weights = ensemble_weighting(len(models))
    for start in range(0, len(chosen), 1024):  # bounded batches of stacked pixels
        part = chosen[start : start + 1024]
        rows = np.flatnonzero(found)[start : start + len(part)]
        pred[rows] = predict_faces(models, part, flip, batch_size, weights)
    pixels = {s: np.stack([f.pixels[s] for f in chosen]) for s in sizes}  # type: ignore[index]
    return Collected(found, face_score, pixels, pred, errors)
