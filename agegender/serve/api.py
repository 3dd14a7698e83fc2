"""The Python API: age and gender of the faces in an image, the models loaded once.

    from agegender.serve.api import analyze
    analyze("me.jpg")                   # [{"age": 31.4, "gender": "female", "gender_prob": 0.93,
                                        #   "box": [412, 188, 230, 230]}], one record per face
    analyze(pil_image, model="ensemble")
    analyze(np.asarray(crop), detect_faces=False)  # uint8 (H, W, 3) or (H, W), already a crop

`agegender-predict` is a command line over the same pieces. The project's models are found in
$AGEGENDER_HOME, the current folder or the checkout this package was installed from, in that
order (`dvc repro` or `dvc pull` puts them there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from agegender.errors import UserError
from agegender.evaluate.inference import combine, load_model, predict
from agegender.layout import ENSEMBLE_WEIGHTS, MODEL_A, MODEL_B, TRAINED
from agegender.serve.faces import NO_FACE, Face, crops, read

HOME = "AGEGENDER_HOME"  # a project folder with models/ (and reports/eval/ensemble.json)
CHECKOUT = Path(__file__).resolve().parents[1]  # where `pip install -e .` was run
SHORT = {"A": MODEL_A.file, "B": MODEL_B.file}


def roots() -> list[Path]:
    """Where the project's files are looked for, in order."""
    env = os.environ.get(HOME)
    return [Path(p) for p in (env, Path.cwd(), CHECKOUT) if p]


def find(relative: Path) -> Path | None:
    return next((root / relative for root in roots() if (root / relative).is_file()), None)


def model_files(model: str) -> list[str]:
    """ "A", "B", "ensemble" (the project's models) or a path, as files to load."""
    if model not in (*SHORT, "ensemble"):
        return [model]
    wanted = [SHORT[model]] if model in SHORT else [m.file for m in TRAINED.values()]
    found = [find(path) for path in wanted]
    if None in found:
        missing = wanted[found.index(None)]
        looked = ", ".join(str(root / missing) for root in roots())
        raise UserError(
            f"{missing}: no such model (looked in {looked}); train it with `dvc repro` or fetch "
            f"it with `dvc pull` in the project, or set {HOME} to the project's folder"
        )
    return [str(path) for path in found]


def ensemble_weighting(n: int) -> dict[str, dict[Any, float]]:
    """The weights evaluate chose on val (reports/eval/ensemble.json), else equal ones."""
    path = find(ENSEMBLE_WEIGHTS)
    if n > 1 and path is not None:
        weights = json.loads(path.read_text())
        if all(len(w) == n for w in weights.values()):
            return {task: dict(enumerate(w.values())) for task, w in weights.items()}
    return {task: dict.fromkeys(range(n), 1 / n) for task in ("age", "gender")}


def predict_faces(
    models: list, faces: list[Face], flip: bool, batch_size: int, weights: dict
) -> np.ndarray:
    """(N, 2) age and probability of female; an ensemble weighs its models by `weights`
    (ensemble_weighting, read once by the caller, not per batch)."""
    preds = {}
    for i, model in enumerate(models):
        side = model.input_shape[1]
        x = np.stack([f.pixels[side] for f in faces])  # type: ignore[index]
        preds[i] = predict(model, x, batch_size, flips=(flip,))[flip]
    return combine(preds, weights)


def record(face: Face, age: float, prob: float) -> dict:
    return {
        "age": float(age),
        "gender": "female" if prob >= 0.5 else "male",
        "gender_prob": float(prob),
        "box": face.box,
    }


class Analyzer:
    """The models of `model` loaded once; call it on any number of images."""

    def __init__(
        self, model: str = "B", *, detect_faces: bool = True, flip: bool = True, batch_size=64
    ):
        self.models = [load_model(path) for path in model_files(model)]
        self.sizes = tuple(sorted({m.input_shape[1] for m in self.models}))
        self.detect_faces, self.flip, self.batch_size = detect_faces, flip, batch_size
        self.weights = ensemble_weighting(len(self.models))

    def __call__(self, image: str | os.PathLike | Image.Image | np.ndarray) -> list[dict]:
        """One record per face found ([] for none), or one for the whole image when it is a
        crop (detect_faces=False). A file that cannot be read is a UserError."""
        faces = self.faces(image)
        if faces[0].error == NO_FACE:
            return []
        if faces[0].error is not None:
            raise UserError(f"{faces[0].path}: {faces[0].error}")
        preds = predict_faces(self.models, faces, self.flip, self.batch_size, self.weights)
        return [record(face, *pred) for face, pred in zip(faces, preds, strict=True)]

    def faces(self, image) -> list[Face]:
        if isinstance(image, (str, os.PathLike)):
            return read(os.fspath(image), self.sizes, self.detect_faces)
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise UserError(
                    f"an image array must be uint8 (H, W) or (H, W, 3), got {image.dtype} "
                    f"{image.shape}"
                )
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            kind = type(image).__name__
            raise UserError(f"analyze takes a path, a PIL image or a uint8 array, not a {kind}")
        return crops(ImageOps.exif_transpose(image), self.sizes, self.detect_faces)


_loaded: dict[tuple, Analyzer] = {}


def analyze(
    image: str | os.PathLike | Image.Image | np.ndarray,
    model: str = "B",
    *,
    detect_faces: bool = True,
    flip: bool = True,
) -> list[dict]:
    """Age and gender of the faces in one image: [{"age", "gender", "gender_prob", "box"}].

    `model`: "B" (default), "A", "ensemble" or a .keras/.tflite path, loaded on the first
    call and kept for the next ones. Each face found is cropped like UTKFace's crops first
    (an image with no face gives []); with `detect_faces=False` the image is taken as one such
    crop.
    """
    key = (model, detect_faces, flip)
    if key not in _loaded:
        _loaded[key] = Analyzer(model, detect_faces=detect_faces, flip=flip)
    return _loaded[key](image)
