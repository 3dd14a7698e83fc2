"""The Python API: age and gender of the faces in an image, the models loaded once.

    from agegender.serve.api import analyze
    analyze("me.jpg")                   # [{"age": 31.4, "age_low": 26.0, "age_high": 37.5,
                                        #   "gender": "female", "gender_prob": 0.93,
                                        #   "box": [412, 188, 230, 230]}], one record per face
    analyze(pil_image, model="ensemble")
    analyze(np.asarray(crop), detect_faces=False)  # uint8 (H, W, 3) or (H, W), already a crop

`agegender-predict` is a command line over the same pieces. The project's models are found in
$AGEGENDER_HOME, the current folder or the checkout this package was installed from, the
first that holds one (`dvc repro` or `dvc pull` puts them there); their ensemble weights and
calibration come from that same folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agegender.errors import UserError
from agegender.evaluate import calibration as calibration_module
from agegender.evaluate.ensemble import combine, read_weights
from agegender.evaluate.inference import load_model, predict
from agegender.images import TooLarge, check_size, to_rgb
from agegender.layout import CALIBRATION, ENSEMBLE, ENSEMBLE_WEIGHTS, MODEL_A, MODEL_B, TRAINED
from agegender.quiet import quiet_native_logs
from agegender.serve.faces import NO_FACE, Face, decode, read

HOME = "AGEGENDER_HOME"  # a project folder with models/ (and reports/eval/ensemble.json)
CHECKOUT = Path(__file__).resolve().parents[2]  # where `pip install -e .` was run
SHORT = {"A": MODEL_A.file, "B": MODEL_B.file}
PROJECT_KEYS = {"A": MODEL_A.key, "B": MODEL_B.key, "ensemble": ENSEMBLE.key}


def roots() -> list[Path]:
    """Where the project's files are looked for, in order."""
    env = os.environ.get(HOME)
    return [Path(p) for p in (env, Path.cwd(), CHECKOUT) if p]


def project() -> Path | None:
    """The project folder: the first of roots() holding a trained model. The models, their
    ensemble weights and calibration all come from it: weights or ranges found in the
    checkout would otherwise describe other models than those found in $AGEGENDER_HOME."""
    trained = [m.file for m in TRAINED.values()]
    return next((r for r in roots() if any((r / f).is_file() for f in trained)), None)


def searched() -> list[Path]:
    """Where a missing file was looked for: the project, or every root when there is none."""
    root = project()
    return roots() if root is None else [root]


def find(relative: Path) -> Path | None:
    root = project()
    return root / relative if root is not None and (root / relative).is_file() else None


def model_files(model: str) -> list[str]:
    """ "A", "B", "ensemble" (the project's models) or a path, as files to load."""
    if model not in (*SHORT, "ensemble"):
        if not model.endswith((".keras", ".tflite")) and not os.path.exists(model):
            raise UserError(
                f"model {model!r}: give A, B, ensemble or a .keras or .tflite model file"
            )
        return [model]
    wanted = [SHORT[model]] if model in SHORT else [m.file for m in TRAINED.values()]
    found = [find(path) for path in wanted]
    if None in found:
        missing = wanted[found.index(None)]
        looked = ", ".join(str(root / missing) for root in searched())
        raise UserError(
            f"{missing}: no such model (looked in {looked}); train it with `dvc repro` or fetch "
            f"it with `dvc pull` when the project has a DVC remote, or set {HOME} to the "
            f"project folder"
        )
    return [str(path) for path in found]


def ensemble_weighting(n: int) -> dict[str, dict[Any, float]]:
    """The weights evaluate chose on val (reports/eval/ensemble.json, read by model name and
    checked), as {task: {model index: weight}}; equal weights for one model or no file."""
    path = find(ENSEMBLE_WEIGHTS)
    if n == len(TRAINED) and path is not None:
        weights = read_weights(path, list(TRAINED))
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


def calibration_for(model: str, calibration: str | os.PathLike | None = None) -> dict | None:
    """The fitted age range and gender temperature of "A", "B" or "ensemble" (evaluate's
    calibration.json, checked), or the block of a file agegender-calibrate wrote for this
    model; None for a model given as a file without one, which gets no range."""
    if calibration is not None:
        return calibration_module.read(Path(calibration), calibration_module.USER)
    if model not in PROJECT_KEYS:
        return None
    path = find(CALIBRATION)
    if path is None:
        raise UserError(
            f"{CALIBRATION}: not found beside the models (looked in "
            f"{', '.join(str(r) for r in searched())}); write it with `dvc repro evaluate`"
        )
    return calibration_module.read(path, PROJECT_KEYS[model])


def model_for(model: str | None, calibration: str | os.PathLike | None) -> str:
    """The model to load: the one asked for, else the one the calibration file was fitted
    for, else B. Asking for another model than the file's is an error: its range and
    temperature describe that model's answers only."""
    if calibration is None:
        return model or "B"
    fitted = calibration_module.fitted_for(Path(calibration))
    if model is not None and model != fitted and Path(model).resolve() != Path(fitted).resolve():
        raise UserError(
            f"{calibration}: fitted for model {fitted}, not {model}; leave --model out (or "
            f"pass --model {fitted})"
        )
    return fitted


def record(face: Face, age: float, prob: float, calibrated: dict | None = None) -> dict:
    """One face's answer. With the model's calibration: the corrected age, its range at the
    fitted level (age_low, age_high) and the temperature-scaled P(female)."""
    out: dict = {"age": float(age)}
    if calibrated is not None:
        fitted = calibration_module.apply(calibrated, np.array([age]), np.array([prob]))
        out = {k: float(fitted[k][0]) for k in ("age", "age_low", "age_high")}
        prob = float(fitted["gender_prob"][0])
    out.update(gender="female" if prob >= 0.5 else "male", gender_prob=float(prob), box=face.box)
    if face.score is not None:  # a detected face: how sure the detector was, and how found
        out.update(face_score=face.score, pyramid_only=face.pyramid_only)
    return out


_models: dict[tuple, Any] = {}


def loaded(path: str):
    """A model file loaded once per process (kept while the file is unchanged): the
    ensemble's Analyzer and B's share model B, as the server's do."""
    stat = os.stat(path) if os.path.isfile(path) else None
    key = (os.path.realpath(path), stat and (stat.st_mtime_ns, stat.st_size))
    if key not in _models:
        with quiet_native_logs():  # TensorFlow's start-up lines, as the CLI hides them
            _models[key] = load_model(path)
    return _models[key]


class Analyzer:
    """The models of `model` loaded once; call it on any number of images."""

    def __init__(
        self,
        model: str | None = "B",
        *,
        detect_faces: bool = True,
        flip: bool = True,
        batch_size: int = 64,
        rotate: bool = False,
        calibration: str | os.PathLike | None = None,
        min_face_score: float = 0.0,
    ):
        model = model_for(model, calibration)
        self.files = model_files(model)
        self.models = [loaded(path) for path in self.files]
        self.sizes = tuple(sorted({m.input_shape[1] for m in self.models}))
        self.detect_faces, self.flip, self.batch_size = detect_faces, flip, batch_size
        self.rotate, self.min_face_score = rotate, min_face_score
        self.weights = ensemble_weighting(len(self.models))
        self.calibrated = calibration_for(model, calibration)

    def __call__(self, image: str | os.PathLike | Image.Image | np.ndarray) -> list[dict]:
        """One record per face found ([] for none), or one for the whole image when it is a
        crop (detect_faces=False). A file that cannot be read is a UserError."""
        faces = self.faces(image)
        if faces[0].error is not None and faces[0].error != NO_FACE:
            raise UserError(f"{faces[0].path}: {faces[0].error}")
        return self.records(faces)

    def records(self, faces: list[Face]) -> list[dict]:
        """One record per face of one image read by faces.read ([] for no face found)."""
        if faces[0].error == NO_FACE:
            return []
        preds = predict_faces(self.models, faces, self.flip, self.batch_size, self.weights)
        return [record(face, *p, self.calibrated) for face, p in zip(faces, preds, strict=True)]

    def faces(self, image) -> list[Face]:
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            return read(path, self.sizes, self.detect_faces, self.rotate, self.min_face_score)
        if isinstance(image, np.ndarray):
            image = array_image(image)
        if not isinstance(image, Image.Image):
            kind = type(image).__name__
            raise UserError(f"analyze takes a path, a PIL image or a uint8 array, not a {kind}")
        if min(image.size) < 1:
            raise UserError(
                f"an empty image ({image.size[0]}x{image.size[1]} pixels): nothing to analyze"
            )
        try:  # the rule files follow (a lazily opened JPEG decodes reduced, as a file does)
            return decode(
                image, self.sizes, self.detect_faces, "", self.rotate, self.min_face_score
            )
        except TooLarge as error:
            raise UserError(f"the image given to analyze is {error}") from None
        except (ValueError, OSError) as error:  # a closed file, a truncated one
            raise UserError(f"the image given to analyze cannot be read ({error})") from None


def array_image(array: np.ndarray) -> Image.Image:
    """A uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array as a PIL image."""
    shape = array.shape
    channels = shape[2] if array.ndim == 3 else 1
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or channels not in (1, 3, 4):
        raise UserError(
            f"an image array must be uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got "
            f"{array.dtype} {shape}"
        )
    if array.size == 0:
        raise UserError(f"an empty image array {shape}: nothing to analyze")
    try:
        check_size(shape[1], shape[0])
    except TooLarge as error:
        raise UserError(f"the image array given to analyze is {error}") from None
    image = Image.fromarray(array[:, :, 0] if channels == 1 and array.ndim == 3 else array)
    return to_rgb(image)  # a 4th channel is alpha: transparent pixels over white


_loaded: dict[tuple, Analyzer] = {}


def analyze(
    image: str | os.PathLike | Image.Image | np.ndarray,
    model: str | None = None,
    *,
    detect_faces: bool = True,
    flip: bool = True,
    rotate: bool = False,
    calibration: str | os.PathLike | None = None,
    min_face_score: float = 0.0,
) -> list[dict]:
    """Age and gender of the faces in one image: [{"age", "age_low", "age_high", "gender",
    "gender_prob", "box", "face_score", "pyramid_only"}]; the range holds the true age at
    evaluate.range_level (80 %) on UTKFace's test faces, gender_prob is calibrated
    (temperature scaling); a model given as a file has no range and its raw probability.

    `model`: "B" (default), "A", "ensemble" or a .keras/.tflite path, loaded on the first
    call and kept for the next ones. Each face found is cropped like UTKFace's crops first
    (an image with no face gives []); with `detect_faces=False` the image is taken as one such
    crop. `rotate`: look for faces in the image turned 90, 180 and 270 degrees when none is
    upright. `calibration`: a file agegender-calibrate fitted on your own labelled faces
    (its model is used unless `model` says the same one). `min_face_score`: leave out faces
    the detector scores lower (face_score).
    """
    key = (model, detect_faces, flip, rotate, os.fspath(calibration or ""), min_face_score)
    if key not in _loaded:
        _loaded[key] = Analyzer(
            model,
            detect_faces=detect_faces,
            flip=flip,
            rotate=rotate,
            calibration=calibration,
            min_face_score=min_face_score,
        )
    return _loaded[key](image)
