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

_CANONICAL = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d{17})\.jpg\.chip\.jpg$")
_LEADING = re.compile(r"^(\d+)_(\d+)_(.*)$")


@dataclass(frozen=True)
class Labels:
    age: int | None
    gender: int | None
    race: int  # UNKNOWN_RACE when the name has no race field
    problem: str  # "" for a canonical name, else what is odd about it
    usable: bool  # age and gender recovered and in range


def parse_name(name: str) -> Labels:
    """Labels from a UTKFace file name (the base name, no folder)."""
    match = _CANONICAL.match(name)
    if match:
        age, gender, race = (int(g) for g in match.groups()[:3])
        return _checked(age, gender, race, "")
    match = _LEADING.match(name)
    if not match:
        return Labels(None, None, UNKNOWN_RACE, "name does not start with {age}_{gender}_", False)
    age, gender, rest = int(match.group(1)), int(match.group(2)), match.group(3)
    fields = rest.split("_")
    problems = []
    race = UNKNOWN_RACE
    if len(fields) >= 2 and fields[0].isdigit() and len(fields[0]) == 1:
        race, stamp = int(fields[0]), fields[1]
    else:
        problems.append("no race field")
        stamp = fields[0]
    digits = re.match(r"\d*", stamp).group(0)  # type: ignore[union-attr]
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
