"""`agegender-predict`'s arguments: argparse only, so --help answers before any heavy import."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model and --calibration, as agegender-predict, -evaluate and -calibrate take them."""
    parser.add_argument(
        "--model",
        default=None,
        help="A or B (the project's models, found in $AGEGENDER_HOME, the current folder or "
        "the checkout), 'ensemble' (both, weighted as evaluate chose on val), or a .keras or "
        "exported .tflite file (default: the --calibration file's model, else B)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        help="a file agegender-calibrate fitted on your own labelled faces: its age "
        "correction, range and gender temperature replace evaluate's (default: evaluate's "
        "reports/eval/calibration.json, fitted on UTKFace)",
    )


def add_face_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--min-face-score",
        type=float,
        default=0.0,
        metavar="S",
        help="leave out faces the detector scores below S (each record's face_score, 0-1; "
        "0 keeps every face the detector finds)",
    )


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (all cores)")


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks of add_face_options' and add_batch_options' values."""
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if not 0 <= args.min_face_score <= 1:
        parser.error("--min-face-score must be between 0 and 1 (a detector score)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="agegender-predict",
        description="Predict age and gender for image files, folders or a list on stdin.",
        epilog="Python: from agegender.api import analyze (see the README).",
    )
    parser.add_argument("inputs", nargs="*", help="image files, folders, or - for paths on stdin")
    add_model_options(parser)
    parser.add_argument("--csv", type=Path, help="write a CSV file instead of JSON lines")
    parser.add_argument("--no-flip", action="store_true", help="skip mirrored-image averaging")
    parser.add_argument(
        "--crops",
        action="store_true",
        help="the images already are face crops like UTKFace's: skip face detection (by "
        "default each face is found, cropped like the training faces and given a record; an "
        "image with no face gets a record saying so)",
    )
    add_face_options(parser)
    parser.add_argument(
        "--rotate",
        action="store_true",
        help="when no face is found upright, look again with the image turned 90, 180 and "
        "270 degrees (up to 3 more detections for such images)",
    )
    parser.add_argument(
        "--detect-faces", action="store_true", help=argparse.SUPPRESS
    )  # default now
    add_batch_options(parser)
    parser.add_argument("--export", type=Path, metavar="DIR", help="write SavedModel and TFLite")
    args = parser.parse_args(argv)
    if not args.inputs and not args.export:
        parser.error("give image files, folders or - (or --export DIR)")
    check_options(parser, args)
    return args
