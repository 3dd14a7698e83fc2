"""Age and gender for any image files: `agegender-predict PATH... [options]`.

    agegender-predict photos/ me.jpg                       # JSON lines on stdout
    find . -name '*.png' | agegender-predict - --csv out.csv
    agegender-predict group.jpg --detect-faces --model ensemble
    agegender-predict --export exported/                   # SavedModel (+ TFLite)

Paths stream through in batches: the next batch decodes in a thread pool while the
model predicts this one, so memory stays flat however many files there are and both
cores work. Bad files never stop a run: each gets a record with an `error` field and a
line on stderr; the exit status is 1 only when nothing could be predicted.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import os
import shutil
import stat
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.errors import UserError, atomic_path, run
from stages.evaluate import predict as forward
from stages.models import load
from stages.utkface import IMAGE_SUFFIXES, to_rgb_square

DEFAULT_MODEL = "models/age_gender_B.keras"
ENSEMBLE = ("models/age_gender_A.keras", "models/age_gender_B.keras")
DETECT_SIDE = 1024  # Haar detection runs on at most this many pixels a side: fast, finds faces
MARGIN = 0.4  # UTKFace's aligned crops hold about this much of the box side around the face
PROGRESS_AFTER = 1000  # images before a progress line appears (on a TTY only)
NO_FACE = "no face found"
FIELDS = ["path", "face", "box", "age", "gender", "gender_prob", "error"]


@dataclass
class Face:
    """One thing to predict, or why there is nothing: a whole image or one detected face."""

    path: str
    pixels: dict[int, np.ndarray] | None = None  # model input side -> uint8 (S, S, 3)
    box: list[int] | None = None  # [x, y, w, h] in the image's pixels (--detect-faces)
    index: int | None = None  # which face of the image (--detect-faces)
    error: str | None = None


# --- inputs ---------------------------------------------------------------------------------


def walk(folder: str) -> Iterator[str]:
    """Image files under a folder, sorted, one directory listing in memory at a time."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from walk(entry.path)
        elif entry.name.lower().endswith(IMAGE_SUFFIXES):
            yield entry.path  # no stat here: read() gives a FIFO or a symlink loop its record


def expand(inputs: Iterable[str], stdin: TextIO) -> Iterator[str]:
    """Files as given, folders recursively, `-` for one path a line on stdin; lazily."""
    for item in inputs:
        lines = (line.rstrip("\r\n") for line in stdin) if item == "-" else [item]
        for path in lines:
            if not path.strip():
                continue
            if os.path.isdir(path):
                yield from walk(path)
            else:
                yield path  # even a missing file: it gets a record saying so


# --- pixels ---------------------------------------------------------------------------------

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
        if not faces:
            return [Face(path, pixels={s: to_rgb_square(image, s) for s in sizes})]
        out = []
        for i, (x, y, w, h) in enumerate(detect(image)):
            m = MARGIN * max(w, h)
            left, top = max(0, round(x - m)), max(0, round(y - m))
            right, bottom = min(image.width, round(x + w + m)), min(image.height, round(y + h + m))
            crop = image.crop((left, top, right, bottom))
            box = [round(v * ratio) for v in (x, y, w, h)]
            out.append(Face(path, {s: to_rgb_square(crop, s) for s in sizes}, box, i))
        return out or [Face(path, error=NO_FACE)]
    except FileNotFoundError:
        return [Face(path, error="no such file")]
    except UnidentifiedImageError:
        return [Face(path, error="not an image")]
    except Exception as error:  # a corrupt file can fail in any decoder step
        text = getattr(error, "strerror", None) or str(error)  # strerror: without the path
        reason = (text.strip().splitlines() or [type(error).__name__])[0][:200]
        return [Face(path, error=f"unreadable image ({reason})")]


# --- models ---------------------------------------------------------------------------------


class TFLiteModel:
    """A .tflite file from --export, with what prediction needs of a Keras model.

    Why: TFLite's XNNPACK kernels run model B's MobileNet about 4x faster than TensorFlow on
    a CPU. Duck-types input_shape and predict_on_batch, so evaluate.predict drives it.
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
        outputs = self.runner.get_output_details()
        self.output_names = list(outputs)
        self.output_shape = [
            (None, *(int(d) for d in o["shape_signature"][1:])) for o in outputs.values()
        ]

    def predict_on_batch(self, x: np.ndarray) -> dict[str, np.ndarray]:
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


# --- prediction -----------------------------------------------------------------------------


def predict_faces(models: list, faces: list[Face], flip: bool, batch_size: int) -> np.ndarray:
    """(N, 2) age and probability of female; the ensemble averages its models."""
    preds = []
    for model in models:
        side = model.input_shape[1]
        x = np.stack([f.pixels[side] for f in faces])  # type: ignore[index]
        plain, flipped = forward(model, x, batch_size)
        preds.append((plain + flipped) / 2 if flip else plain)
    return np.mean(preds, axis=0)


def batches(items: Iterable[str], n: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def predict_files(
    paths: Iterable[str],
    models: list,
    *,
    flip: bool = True,
    faces: bool = False,
    batch_size: int = 64,
    workers: int | None = None,
) -> Iterator[dict]:
    """One record per image (per face with `faces`), in input order, unrounded.

    Two batches of pixels at most are in memory: the one predicting and the next one,
    which the thread pool decodes meanwhile (PIL and OpenCV release the GIL).
    """
    sizes = tuple(sorted({m.input_shape[1] for m in models}))
    chunks = batches(paths, batch_size)
    with ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:

        def submit(chunk: list[str]) -> list[Future]:
            return [pool.submit(read, p, sizes, faces) for p in chunk]

        pending = submit(next(chunks, []))
        while pending:
            batch = [face for future in pending for face in future.result()]
            pending = submit(next(chunks, []))  # decode ahead while the model works
            ok = [f for f in batch if f.error is None]
            preds = iter(predict_faces(models, ok, flip, batch_size) if ok else [])
            for face in batch:
                record: dict = {"path": face.path}
                if face.index is not None:
                    record.update(face=face.index, box=face.box)
                if face.error is not None:
                    record["error"] = face.error
                else:
                    age, prob = next(preds)
                    record.update(
                        age=float(age),
                        gender="female" if prob >= 0.5 else "male",
                        gender_prob=float(prob),
                    )
                yield record


# --- export ---------------------------------------------------------------------------------


def export(model: keras.Model, folder: Path) -> None:
    """A TensorFlow SavedModel (endpoint `serve`) and, where it converts, a TFLite file.

    Both take uint8 (N, S, S, 3) and return age and gender like the .keras model; flip
    averaging is left to the caller, as it is a second forward pass. The endpoint passes
    training=False: `model.export()` traces the model with no training flag, so Keras uses
    training-time behaviour (random augmentation, BatchNorm batch statistics); model A's
    SavedModel then disagreed with predict() and TFLite had no kernels for the random ops.
    """
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    saved, tmp = folder / "saved_model", folder / ".saved_model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            lambda image: model(image, training=False),
            input_signature=[keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="uint8")],
        )
        archive.write_out(str(tmp), verbose=False)
        shutil.rmtree(saved, ignore_errors=True)
        os.replace(tmp, saved)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"export: wrote {saved} (SavedModel, endpoint 'serve')")
    try:
        tflite = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        (folder / "model.tflite").unlink(missing_ok=True)  # an older one would not match
        print(f"export: no TFLite file, conversion failed ({reason}); the SavedModel is complete")
        return
    with atomic_path(folder / "model.tflite") as path:
        path.write_bytes(tflite)
    print(f"export: wrote {folder / 'model.tflite'} (TFLite)")


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="agegender-predict",
        description="Predict age and gender for image files, folders or a list on stdin.",
    )
    parser.add_argument("inputs", nargs="*", help="image files, folders, or - for paths on stdin")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a .keras or exported .tflite file, or 'ensemble' for the average of A and B "
        f"(default {DEFAULT_MODEL})",
    )
    parser.add_argument("--csv", type=Path, help="write a CSV file instead of JSON lines")
    parser.add_argument("--no-flip", action="store_true", help="skip mirrored-image averaging")
    parser.add_argument(
        "--detect-faces", action="store_true", help="find faces (OpenCV), one result per face"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (all cores)")
    parser.add_argument("--export", type=Path, metavar="DIR", help="write SavedModel and TFLite")
    args = parser.parse_args(argv)
    if not args.inputs and not args.export:
        parser.error("give image files, folders or - (or --export DIR)")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def rounded(record: dict) -> dict:
    """Output precision: tenths of a year are already far below the model's error."""
    if "age" not in record:
        return record
    return {
        **record,
        "age": round(record["age"], 1),
        "gender_prob": round(record["gender_prob"], 4),
    }


def check_csv(path: Path) -> None:
    """Fail before predicting: a CSV path that cannot be written would lose every result."""
    if path.is_dir():
        example = path / "predictions.csv"
        raise UserError(f"--csv {path}: is a folder; give a file name, such as {example}")
    folder = next(p for p in path.parents if p.exists())  # the rest is made on writing
    if not folder.is_dir():
        raise UserError(f"--csv {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK):
        raise UserError(f"--csv {path}: cannot write in {folder}")


def printable(path: str) -> str:
    """A file name whose bytes are not UTF-8 (PEP 383 keeps them as lone surrogates), with
    those bytes as \\xNN: a UTF-8 CSV cannot hold them as they are."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@contextlib.contextmanager
def output(csv_path: Path | None) -> Iterator[Callable[[dict], None]]:
    """A function writing one record: JSON lines on stdout, or a CSV file renamed into place
    only once complete."""
    if csv_path is None:

        def write_json(record: dict) -> None:
            sys.stdout.write(json.dumps(rounded(record)) + "\n")

        yield write_json
        sys.stdout.flush()
        return
    with (
        atomic_path(csv_path) as tmp,
        open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as out,
    ):
        writer = csv.DictWriter(out, FIELDS)
        writer.writeheader()

        def write(record: dict) -> None:
            row = rounded(record)
            row["path"] = printable(row["path"])
            if row.get("box") is not None:
                row["box"] = " ".join(map(str, row["box"]))
            writer.writerow(row)

        yield write


def cli(argv: list[str] | None = None, stdin: TextIO | None = None) -> int:
    """Run the tool; returns the exit status (1: nothing predicted). Raises UserError."""
    args = parse_args(argv)
    if args.csv is not None:
        check_csv(args.csv)
    paths = ENSEMBLE if args.model == "ensemble" else (args.model,)
    if args.export and (len(paths) > 1 or paths[0].endswith(".tflite")):
        raise UserError("--export: give one .keras model file (export A and B one at a time)")
    if args.detect_faces:
        check_face_detector()
    models = [load_model(p) for p in paths]
    if args.export:
        export(models[0], args.export)
        if not args.inputs:
            return 0
    records = predict_files(
        expand(args.inputs, stdin or sys.stdin),
        models,
        flip=not args.no_flip,
        faces=args.detect_faces,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    tty = sys.stderr.isatty()
    erase = "\r\033[K" if tty else ""  # clears the progress line before another line
    start = last_shown = time.monotonic()
    images = predicted = errors = no_face = 0
    last_path = None
    with output(args.csv) as write:
        for record in records:
            write(record)
            images += record["path"] != last_path  # several faces of one image count once
            last_path = record["path"]
            error = record.get("error")
            if error is None:
                predicted += 1
            elif error == NO_FACE:
                no_face += 1
            else:
                errors += 1
                print(f"{erase}{record['path']}: {error}", file=sys.stderr)
            if tty and images >= PROGRESS_AFTER and time.monotonic() - last_shown > 0.5:
                last_shown = time.monotonic()
                rate = images / (last_shown - start)
                print(
                    f"{erase}{images} images, {errors} errors, {rate:.0f}/s",
                    end="",
                    file=sys.stderr,
                )
    summary = f"predict: {images} images, {errors} errors"
    if args.detect_faces:
        summary += f", {predicted} faces, {no_face} without a face"
    rate = images / max(time.monotonic() - start, 1e-9)
    print(f"{erase}{summary}, {rate:.1f} images/s", file=sys.stderr)
    return 0 if predicted else 1


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a UserError is one line on stderr and exit status 2."""

    def go() -> None:
        if isinstance(sys.stdin, io.TextIOWrapper):  # `find | agegender-predict -`: any names
            sys.stdin.reconfigure(errors="surrogateescape")
        try:
            status = cli(argv)
        except BrokenPipeError:  # `agegender-predict ... | head`: the reader is done
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            status = 0
        sys.exit(status)

    run(go)


if __name__ == "__main__":
    main()
