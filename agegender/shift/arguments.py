"""agegender-evaluate's and agegender-calibrate's arguments: argparse only, so --help and
usage errors answer before TensorFlow is imported."""

from __future__ import annotations

import argparse
from pathlib import Path

from agegender.serve.arguments import (
    add_batch_options,
    add_face_options,
    add_model_options,
    check_options,
)

LABELS_HELP = (
    "a folder of labelled face images: UTKFace-style names ({age}_{gender}_....jpg, gender 0 "
    "male, 1 female) or a labels.csv with columns file,age,gender (age in years or a group "
    "like 25-32; gender male or female)"
)
MIN_FIT = 100  # faces to fit a calibration on: a range per bucket needs 40 a bucket
MIN_CHECK = 25  # faces kept aside to show what the calibration does


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help=LABELS_HELP)
    add_model_options(parser)
    parser.add_argument(
        "--crops",
        action="store_true",
        help="the images already are face crops like UTKFace's: skip face detection",
    )
    add_face_options(parser)
    parser.add_argument("--no-flip", action="store_true", help="skip mirrored-image averaging")
    add_batch_options(parser)


def _checked(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    check_options(parser, args)
    return args


def evaluate_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="agegender-evaluate",
        description="Score a model on your own labelled faces: gender accuracy, age MAE, "
        "mean signed error, per age bucket, the age range's coverage and the gender ECE.",
        epilog="Scores from UTKFace hold on faces like UTKFace's; this says how they hold on "
        "yours. agegender-calibrate refits the range for them.",
    )
    _common(parser)
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for scores.json and faces.csv (default: evaluated-FOLDERNAME in the "
        "current folder)",
    )
    return _checked(parser, argv)


def calibrate_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="agegender-calibrate",
        description="Refit a model's age correction, age range and gender temperature on your "
        "own labelled faces, checked on a part of them kept aside; writes a calibration file "
        "for agegender-predict --calibration and analyze(..., calibration=...).",
    )
    _common(parser)
    parser.add_argument("--out", type=Path, required=True, help="the calibration file to write")
    parser.add_argument(
        "--fit",
        type=int,
        default=None,
        metavar="N",
        help=f"faces to fit on (default: a fifth of them, at least {MIN_FIT}); the rest check",
    )
    parser.add_argument("--level", type=float, default=0.8, help="the range's coverage (0.8)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the fit/check split")
    parser.add_argument(
        "--adapt",
        action="store_true",
        help="also retrain model B's heads on your fitting faces with UTKFace's training faces "
        "(needs data/prepared from `dvc repro`); written beside --out as a .keras file and "
        "kept only when it beats the unadapted model on the checking faces",
    )
    args = _checked(parser, argv)
    if args.fit is not None and args.fit < MIN_FIT:
        parser.error(f"--fit must be at least {MIN_FIT} faces")
    if not 0.5 <= args.level < 1:
        parser.error("--level must be in [0.5, 1)")
    if args.out.suffix != ".json":
        parser.error("--out names a .json file (an adapted model is written beside it as .keras)")
    return args
