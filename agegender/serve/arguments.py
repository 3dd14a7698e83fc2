"""`agegender-predict`'s arguments: argparse only, so --help answers before any heavy import."""

from __future__ import annotations

import argparse
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="agegender-predict",
        description="Predict age and gender for image files, folders or a list on stdin.",
        epilog="Python: from agegender.serve.api import analyze (see the README).",
    )
    parser.add_argument("inputs", nargs="*", help="image files, folders, or - for paths on stdin")
    parser.add_argument(
        "--model",
        default="B",
        help="A or B (the project's models, found in $AGEGENDER_HOME, the current folder or "
        "the checkout), 'ensemble' (both, weighted as evaluate chose on val), or a .keras or "
        "exported .tflite file (default B)",
    )
    parser.add_argument("--csv", type=Path, help="write a CSV file instead of JSON lines")
    parser.add_argument("--no-flip", action="store_true", help="skip mirrored-image averaging")
    parser.add_argument(
        "--crops",
        action="store_true",
        help="the images already are face crops like UTKFace's: skip face detection (by "
        "default each face is found, cropped like the training faces and given a record; an "
        "image with no face gets a record saying so)",
    )
    parser.add_argument(
        "--rotate",
        action="store_true",
        help="when no face is found upright, look again with the image turned 90, 180 and "
        "270 degrees (up to 3 more detections for such images)",
    )
    parser.add_argument(
        "--detect-faces", action="store_true", help=argparse.SUPPRESS
    )  # default now
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
