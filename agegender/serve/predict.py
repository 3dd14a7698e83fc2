"""Age and gender for any image files: `agegender-predict PATH... [options]`.

    agegender-predict photos/ me.jpg                       # JSON lines on stdout
    find . -name '*.png' | agegender-predict - --csv out.csv
    agegender-predict group.jpg --model ensemble            # one record per face
    agegender-predict crops/ --crops                       # images that already are face crops
    agegender-predict --export exported/                   # SavedModel (+ TFLite)

Paths stream through in batches: the next batch decodes in a thread pool while the
model predicts this one, so memory stays flat however many files there are and both
cores work. Bad files never stop a run: each gets a record with an `error` field and a
line on stderr; the exit status is 1 only when nothing could be predicted.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from agegender.errors import UserError, run, write_failure
from agegender.evaluate.inference import load_model
from agegender.files import MAX_DEPTH, atomic_path
from agegender.images import IMAGE_SUFFIXES
from agegender.quiet import quiet_native_logs
from agegender.serve.api import (
    calibration_for,
    ensemble_weighting,
    model_files,
    model_for,
    predict_faces,
    record,
)
from agegender.serve.arguments import parse_args
from agegender.serve.export import export
from agegender.serve.faces import NO_FACE, Face, check_face_detector, read
from agegender.spreadsheet import safe_cell

PROGRESS_AFTER = 2.0  # seconds before a progress bar appears (on a terminal only)
FIELDS = [
    "path", "face", "box", "age", "age_low", "age_high", "gender", "gender_prob",
    "face_score", "pyramid_only", "error",
]  # fmt: skip


# --- inputs ---------------------------------------------------------------------------------


class Unlisted(str):
    """A folder that could not be listed (unreadable, removed meanwhile): in the stream of
    paths, it stands for its own error record, and the run goes on with the rest."""

    error: str


def unlisted(path: str, error: OSError) -> Unlisted:
    folder = Unlisted(path)
    folder.error = f"folder not listed ({error.strerror or type(error).__name__})"
    return folder


def walk(folder: str) -> Iterator[str]:
    """Image files under a folder, sorted, one directory listing per level in memory.
    Iterative, with files.MAX_DEPTH as the limit: a recursive walk overflows on 1,000 levels.
    A folder that cannot be listed is yielded as an Unlisted, never raised."""

    stack: list[Iterator[os.DirEntry]] = []

    def enter(path: str) -> Iterator[Unlisted]:
        """Push the folder's sorted listing, or yield why it has none."""
        try:
            with os.scandir(path) as it:
                stack.append(iter(sorted(it, key=lambda e: e.name)))
        except OSError as error:
            yield unlisted(path, error)

    yield from enter(folder)
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif entry.name.startswith("."):
            continue
        elif entry.is_dir(follow_symlinks=False):
            if len(stack) > MAX_DEPTH:
                raise UserError(
                    f"{entry.path}: folders nested over {MAX_DEPTH} levels deep; move the "
                    f"images into a shallower folder"
                )
            yield from enter(entry.path)
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


# --- prediction ---------------------------------------------------------------------------


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
    rotate: bool = False,
    batch_size: int = 64,
    workers: int | None = None,
    calibrated: dict | None = None,
    min_face_score: float = 0.0,
) -> Iterator[dict]:
    """One record per image (per face with `faces`), in input order, unrounded.

    Two batches of pixels at most are in memory: the one predicting and the next one,
    which the thread pool decodes meanwhile (PIL releases the GIL).
    """
    sizes = tuple(sorted({m.input_shape[1] for m in models}))
    weights = ensemble_weighting(len(models))
    chunks = batches(paths, batch_size)
    with ThreadPoolExecutor(workers or os.cpu_count() or 2) as pool:

        def read_one(path: str) -> list[Face]:
            if isinstance(path, Unlisted):
                return [Face(str(path), error=path.error)]
            return read(path, sizes, faces, rotate, min_face_score)

        def submit(chunk: list[str]) -> list[Future]:
            return [pool.submit(read_one, p) for p in chunk]

        pending = submit(next(chunks, []))
        while pending:
            batch = [face for future in pending for face in future.result()]
            pending = submit(next(chunks, []))  # decode ahead while the model works
            ok = [f for f in batch if f.error is None]
            preds = iter(predict_faces(models, ok, flip, batch_size, weights) if ok else [])
            for face in batch:
                yield row(face, None if face.error else record(face, *next(preds), calibrated))


def row(face: Face, answer: dict | None) -> dict:
    """One output record, as agegender-predict writes it and agegender-serve answers."""
    out: dict = {"path": face.path}
    if face.index is not None:  # a detected face: which one, and where
        out.update(face=face.index, box=face.box)
    if face.error is not None:
        out["error"] = face.error
    else:
        out.update({k: v for k, v in (answer or {}).items() if k != "box"})
    return out


# --- command line ---------------------------------------------------------------------------


def check_some_input(inputs: list[str]) -> None:
    """Stop before the models load (seconds) when every input named is missing; with one
    there, each missing one gets its record in the run."""
    missing = [p for p in inputs if p != "-" and not os.path.lexists(p)]
    if inputs and len(missing) == len(inputs):
        more = len(missing) - 1
        others = f" (nor the {more} other input{'s' if more > 1 else ''})" if more else ""
        raise UserError(f"{missing[0]}: no such file or folder{others}; nothing to predict")


def rounded(record: dict) -> dict:
    """Output precision: tenths of a year are already far below the model's error."""
    if "age" not in record:
        return record
    return {
        **record,
        **{k: round(record[k], 1) for k in ("age", "age_low", "age_high") if k in record},
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

        def write_json(result: dict) -> None:
            row = rounded(result)
            row["path"] = printable(row["path"])  # the CSV's spelling of odd bytes: \xNN
            sys.stdout.write(json.dumps(row) + "\n")

        try:
            yield write_json
            sys.stdout.flush()
        except OSError as error:
            failure = write_failure(error, "standard output")
            if failure is None:
                raise
            raise failure from None
        return
    with (
        atomic_path(csv_path) as tmp,
        open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as out,
    ):
        writer = csv.DictWriter(out, FIELDS)
        writer.writeheader()

        def write(record: dict) -> None:
            row = rounded(record)
            row["path"] = safe_cell(printable(row["path"]))
            if row.get("box") is not None:
                row["box"] = " ".join(map(str, row["box"]))
            writer.writerow(row)

        yield write


def cli(argv: list[str] | None = None, stdin: TextIO | None = None) -> int:
    """Run the tool; returns the exit status (1: nothing predicted). Raises UserError."""
    args = parse_args(argv)
    if args.csv is not None:
        check_csv(args.csv)
    model = model_for(args.model, args.calibration)
    paths = model_files(model)
    if args.export and (len(paths) > 1 or paths[0].endswith(".tflite")):
        raise UserError("--export: give one .keras model file (export A and B one at a time)")
    if not args.crops:
        check_face_detector()
    check_some_input(args.inputs)
    with quiet_native_logs():  # TensorFlow's start-up lines (cuInit on a CPU machine)
        models = [load_model(p) for p in paths]
    if args.export:
        export(models[0], args.export)
        if not args.inputs:
            return 0
    records = predict_files(
        expand(args.inputs, stdin or sys.stdin),
        models,
        flip=not args.no_flip,
        faces=not args.crops,
        rotate=args.rotate,
        batch_size=args.batch_size,
        workers=args.workers,
        calibrated=calibration_for(model, args.calibration),
        min_face_score=args.min_face_score,
    )
    start = time.monotonic()
    images = predicted = errors = no_face = 0
    last_path = None
    # The bar shows on a terminal only (disable=None), after PROGRESS_AFTER seconds.
    bar = tqdm(unit=" images", delay=PROGRESS_AFTER, disable=None, file=sys.stderr)
    with bar, output(args.csv) as write:
        for record in records:
            write(record)
            new_image = record["path"] != last_path  # several faces of one image count once
            images += new_image
            last_path = record["path"]
            error = record.get("error")
            if error is None:
                predicted += 1
            elif error == NO_FACE:
                no_face += 1
            else:
                errors += 1
                bar.write(f"{record['path']}: {error}", file=sys.stderr)
            bar.update(new_image)
    summary = f"predict: {images} images, {errors} errors"
    if not args.crops:
        summary += f", {predicted} faces, {no_face} without a face"
    if predicted:  # a rate of errors is no speed
        summary += f", {images / max(time.monotonic() - start, 1e-9):.1f} images/s"
    print(summary, file=sys.stderr)
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
