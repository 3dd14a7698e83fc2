"""UTKFace's labels, read from its file names.

Names are `{age}_{gender}_{race}_{datetime}.jpg.chip.jpg` (gender 0 male, 1 female;
race 0-4 White, Black, Asian, Indian, Others). The real archive has a few names that
break the pattern; age and gender are always the first two fields, so they are
recovered where that is unambiguous, and the deviation is recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

RACES = ["White", "Black", "Asian", "Indian", "Others"]
UNKNOWN_RACE = -1
MAX_AGE = 120
AGE_BUCKETS = ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]

# ASCII digits only, as UTKFace writes them: \d would take Arabic-Indic or fullwidth digits,
# and an age or gender of more than 3 digits is no label (20 digits overflowed SQLite).
_CANONICAL = re.compile(r"^([0-9]{1,3})_([0-9]{1,3})_([0-9])_([0-9]{17})\.jpg\.chip\.jpg$")
_LEADING = re.compile(r"^([0-9]{1,3})_([0-9]{1,3})_(.*)$", re.DOTALL)
MAX_NAME = 255  # a file name's limit on common file systems; longer ones are malformed


@dataclass(frozen=True)
class Labels:
    age: int | None
    gender: int | None
    race: int  # UNKNOWN_RACE when the name has no race field
    problem: str  # "" for a canonical name, else what is odd about it
    usable: bool  # age and gender recovered and in range


def parse_name(name: str) -> Labels:
    """Labels from a UTKFace file name (the base name, no folder)."""
    if len(name) > MAX_NAME:  # every split row would take its width in names.npy
        return Labels(None, None, UNKNOWN_RACE, f"name over {MAX_NAME} characters", False)
    match = _CANONICAL.match(name)
    if match:
        age, gender, race = (int(g) for g in match.groups()[:3])
        return _checked(age, gender, race, "")
    match = _LEADING.match(name)
    if not match:
        problem = "name does not start with {age}_{gender}_ (1-3 ASCII digits each)"
        return Labels(None, None, UNKNOWN_RACE, problem, False)
    age, gender, rest = int(match.group(1)), int(match.group(2)), match.group(3)
    fields = rest.split("_")
    problems = []
    race = UNKNOWN_RACE
    if len(fields) >= 2 and re.fullmatch("[0-9]", fields[0]):
        race, stamp = int(fields[0]), fields[1]
    else:
        problems.append("no race field")
        stamp = fields[0]
    digits = re.match("[0-9]*", stamp).group(0)  # type: ignore[union-attr]
    suffix = stamp[len(digits) :]
    if len(digits) != 17:
        problems.append(f"{len(digits)}-digit timestamp")
    if suffix != ".jpg.chip.jpg":
        if suffix.strip() == ".jpg.chip.jpg":
            problems.append("space before .jpg")
        elif suffix == "jpg.chip.jpg":
            problems.append("missing dot before jpg")
        else:
            problems.append(f"unexpected ending {suffix!r}")
    return _checked(age, gender, race, "; ".join(problems))


def _checked(age: int, gender: int, race: int, problem: str) -> Labels:
    out_of_range = []
    if gender not in (0, 1):
        out_of_range.append(f"gender {gender} not 0/1")
    if not 0 <= age <= MAX_AGE:
        out_of_range.append(f"age {age} outside 0-{MAX_AGE}")
    if race != UNKNOWN_RACE and not 0 <= race < len(RACES):
        out_of_range.append(f"race {race} not 0-{len(RACES) - 1}")
        race = UNKNOWN_RACE
    if out_of_range:
        problem = "; ".join(filter(None, [problem, *out_of_range]))
        return Labels(age, gender, race, problem, False)
    return Labels(age, gender, race, problem, True)


def age_bucket(age: np.ndarray | int) -> np.ndarray:
    """Index into AGE_BUCKETS: decades, with 70 and over in one bucket."""
    return np.minimum(np.asarray(age) // 10, len(AGE_BUCKETS) - 1)
