"""A user's labelled faces: a folder of UTKFace-style names, or a folder with a labels.csv.

labels.csv has the columns `file,age,gender`: `file` relative to the folder; `age` a number
of years or a group (`25-32`, `(25, 32)`, `70+`: the collections that give groups, like
Adience's); `gender` `male` or `female`. An empty age or gender is unlabelled: the scores
that need it leave that face out. A bad row stops with one line naming it.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agegender.errors import UserError
from agegender.images import IMAGE_SUFFIXES
from agegender.labels import MAX_AGE, parse_name

LABELS_CSV = "labels.csv"
GENDERS = {"male": 0, "female": 1}
_NUMBER = r"\s*([0-9]+(?:\.[0-9]+)?)\s*"
_GROUP = re.compile(rf"^\(?{_NUMBER}(?:-|,){_NUMBER}\)?$")
_OPEN_GROUP = re.compile(rf"^{_NUMBER}\+$")


@dataclass(frozen=True)
class Faces:
    """The labels of a folder's faces, one row each (NaN / -1: not labelled)."""

    paths: list[str]
    age: np.ndarray  # exact age in years; NaN for a group or no age
    low: np.ndarray  # the age group's bounds (equal to age for an exact age); NaN for none
    high: np.ndarray
    gender: np.ndarray  # 1 female, 0 male, -1 unlabelled
    source: str  # "labels.csv" or "file names"

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: np.ndarray) -> Faces:
        return Faces(
            [self.paths[i] for i in rows],
            self.age[rows],
            self.low[rows],
            self.high[rows],
            self.gender[rows],
            self.source,
        )


def parse_age(text: str) -> tuple[float, float, float]:
    """(age, low, high) from a labels.csv cell; ValueError when it is neither a number of
    years in 0-MAX_AGE nor a group of two (low <= high) or `N+`."""
    text = text.strip()
    if not text:
        return math.nan, math.nan, math.nan
    if re.fullmatch(_NUMBER, text):
        age = float(text)
        if age > MAX_AGE:
            raise ValueError(f"age {text} over {MAX_AGE}")
        return age, age, age
    group, open_group = _GROUP.match(text), _OPEN_GROUP.match(text)
    if group:
        low, high = float(group.group(1)), float(group.group(2))
    elif open_group:
        low, high = float(open_group.group(1)), float(MAX_AGE)
    else:
        raise ValueError(f"age {text!r} is neither a number nor a group like 25-32 or 70+")
    if not low <= high <= MAX_AGE:
        raise ValueError(f"age group {text!r} needs low <= high <= {MAX_AGE}")
    return math.nan, low, high


def parse_gender(text: str) -> int:
    text = text.strip().lower()
    if not text:
        return -1
    if text not in GENDERS:
        raise ValueError(f"gender {text!r} is not male or female")
    return GENDERS[text]


def read_csv(folder: Path) -> Faces:
    path = folder / LABELS_CSV
    rows: list[tuple[str, float, float, float, int]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = {"file", "age", "gender"} - set(reader.fieldnames or [])
            if missing:
                absent = ", ".join(sorted(missing))
                raise UserError(f"{path}: needs the columns file,age,gender (missing {absent})")
            for line, row in enumerate(reader, start=2):
                name = (row["file"] or "").strip()
                where = f"{path}:{line}"
                if not name:
                    raise UserError(f"{where}: no file name; every row names an image")
                image = folder / name
                if not image.is_file():
                    raise UserError(f"{where}: {name}: no such file in {folder}")
                try:
                    age = parse_age(row["age"] or "")
                    gender = parse_gender(row["gender"] or "")
                except ValueError as error:
                    raise UserError(
                        f"{where}: {error}; fix the row or leave the cell empty"
                    ) from None
                rows.append((str(image), *age, gender))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: not readable ({type(error).__name__}: {error})") from None
    return _faces(rows, LABELS_CSV, path)


def read_names(folder: Path) -> Faces:
    """Labels from UTKFace-style file names ({age}_{gender}_...): the names that do not
    parse are left out and counted."""
    rows, skipped = [], 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            labels = parse_name(name)
            if not labels.usable:
                skipped += 1
                continue
            age = float(labels.age)  # type: ignore[arg-type]
            rows.append((os.path.join(root, name), age, age, age, int(labels.gender)))  # type: ignore[arg-type]
    if skipped:
        print(f"labels: {skipped} file names without {{age}}_{{gender}}_ left out")
    return _faces(rows, "file names", folder)


def _faces(rows: list, source: str, where: Path) -> Faces:
    if not rows:
        raise UserError(
            f"{where}: no labelled faces; give a folder of UTKFace-style names "
            f"({{age}}_{{gender}}_....jpg) or one with a {LABELS_CSV} (file,age,gender)"
        )
    paths, age, low, high, gender = zip(*rows, strict=True)
    return Faces(
        list(paths),
        np.array(age, "float64"),
        np.array(low, "float64"),
        np.array(high, "float64"),
        np.array(gender, "int64"),
        source,
    )


def read_folder(folder: str | Path) -> Faces:
    """The labelled faces of a folder: its labels.csv when there is one, else its names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; give a folder of labelled face images")
    return read_csv(folder) if (folder / LABELS_CSV).is_file() else read_names(folder)
