"""Loading a saved model and predicting in batches: used by the evaluate stage, the predict
CLI and the benchmarks, so all three compute the same numbers the same way."""

from __future__ import annotations

import os
import threading
import warnings
import zipfile
from typing import TYPE_CHECKING

import numpy as np

from agegender.errors import UserError

if TYPE_CHECKING:
    import keras


def load(path: str) -> keras.Model:
    """Load a saved model safely (no arbitrary code), with a clear error if it is not there."""
    if not os.path.isfile(path):
        raise UserError(
            f"{path}: no such model; train it with `dvc repro` (train_a / train_b) or fetch it "
            f"with `dvc pull` when the project has a DVC remote"
        )
    fix = "rebuild it with `dvc repro` (or `dvc pull` when the project has a DVC remote)"
    if not zipfile.is_zipfile(path):  # Keras would call a truncated file "File not found"
        raise UserError(f"{path}: not a readable Keras file (truncated or not a model); {fix}")
    import keras  # here, not at the top: `from agegender.api import analyze` stays fast

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"{path}: not a readable Keras file ({reason}); {fix}") from None


def predict(
    model, images: np.ndarray, batch_size: int, flips: tuple[bool, ...] = (True, False)
) -> dict[bool, np.ndarray]:
    """{flip: (N, 2) age and gender probability} for each flip setting asked for: True
    averages each face's prediction with its mirror image's, False does not.

    The one place flip averaging is computed (evaluate, predict, the API). Batched over a
    memory-mapped split, so memory stays flat however big it is.
    """
    plain, flipped = [], []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size])
        plain.append(_outputs(model.predict_on_batch(batch)))
        if True in flips:
            flipped.append(_outputs(model.predict_on_batch(batch[:, :, ::-1])))
    empty = np.zeros((0, 2), "float32")
    out = {False: np.concatenate(plain) if plain else empty}
    if True in flips:
        out[True] = (out[False] + np.concatenate(flipped)) / 2 if flipped else empty
    return {flip: out[flip] for flip in flips}


def _outputs(y: dict) -> np.ndarray:
    return np.concatenate([np.asarray(y["age"]), np.asarray(y["gender"])], axis=1)


class TFLiteModel:
    """A .tflite file from --export, with what prediction needs of a Keras model.

    Why: TFLite's XNNPACK kernels run model B's MobileNet about 4x faster than TensorFlow on
    a CPU. Duck-types input_shape and predict_on_batch, so `predict` drives it.
    """

    def __init__(self, path: str):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # TensorFlow's copy, deprecated in its favour but still shipped
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter  # noqa: N806
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the deprecation notice is not the user's concern
                self.interpreter = Interpreter(model_path=path, num_threads=os.cpu_count())
            self.runner = self.interpreter.get_signature_runner()
            ((self.input, spec),) = self.runner.get_input_details().items()
        except Exception as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise UserError(
                f"{path}: not a TFLite model this tool can run ({reason}); write one with "
                f"`agegender-predict --model MODEL.keras --export DIR`"
            ) from None
        self.input_shape = (None, *(int(d) for d in spec["shape_signature"][1:]))
        self.lock = threading.Lock()
        outputs = self.runner.get_output_details()
        self.output_names = list(outputs)
        self.output_shape = [
            (None, *(int(d) for d in o["shape_signature"][1:])) for o in outputs.values()
        ]

    def predict_on_batch(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self.lock:  # an interpreter is not thread-safe; the server's threads share it
            return self.runner(**{self.input: np.ascontiguousarray(x)})


def check_model(model, path: str) -> None:
    """Fail before any image if the model does not take and return what this tool deals in:
    another shape fails mid-run in a Keras traceback, and a variable input size (None, None)
    would make every image an error."""
    try:
        shape, shapes = tuple(model.input_shape), model.output_shape
    except (AttributeError, ValueError):  # e.g. a Sequential model that was never built
        shape, shapes = (), []
    shapes = shapes if isinstance(shapes, list) else [shapes]  # one output: a bare tuple
    outputs = {name: tuple(s) for name, s in zip(model.output_names, shapes, strict=False)}
    side = shape[1] if len(shape) == 4 else None
    fits = isinstance(side, int) and side > 0 and shape == (None, side, side, 3)
    if not fits or outputs != {"age": (None, 1), "gender": (None, 1)}:
        raise UserError(
            f"{path}: takes {shape} and returns {outputs}; this tool needs a model taking uint8 "
            f"images (N, S, S, 3) of a fixed side S and returning {{'age': (N, 1), 'gender': "
            f"(N, 1)}}, like those `dvc repro` trains"
        )


def load_model(path: str):
    """A .keras model, or a .tflite file written by --export, checked for shape."""
    if not path.endswith(".tflite"):
        model = load(path)
    elif not os.path.isfile(path):
        raise UserError(
            f"{path}: no such model; write it with `agegender-predict --model MODEL.keras "
            f"--export DIR`"
        )
    else:
        model = TFLiteModel(path)
    check_model(model, path)
    return model
