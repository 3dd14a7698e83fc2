"""Numbers and words for the report: every value is printed through these few formats."""

from __future__ import annotations

import math


def fmt(value: float | int | None, kind: str) -> str:
    """A value as `kind` says: "pct", "int" or a float format such as "3f"; "–" if missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    return f"{value:.{kind}}"


def fmt_gap(value: float | None, kind: str) -> str:
    """A signed difference: percentage points for rates, the metric's unit otherwise."""
    if value is None or kind == "int":
        return "–" if value is None else ""
    if kind == "pct":
        return f"{100 * value:+.2f} pts"
    return f"{value:+.{kind}}"


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def join(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def capital(text: str) -> str:
    """Upper-case the first letter only ('the ensemble' -> 'The ensemble')."""
    return text[:1].upper() + text[1:]


def interval_phrase(
    differences: dict, first: str, second: str, key: str, kind: str, sign: int = 1
) -> str:
    """'95 % interval +0.20 to +1.10 points' for sign * (second - first), from trust.json's
    paired bootstrap, with ', indistinguishable on this split' when it holds 0. `sign` lets a
    sentence state the interval of the very difference it states (a lead is positive)."""
    found = differences.get(f"{second} - {first}", {}).get(key)
    if found is None:
        found, sign = differences.get(f"{first} - {second}", {}).get(key), -sign
    if found is None:
        return "no interval"
    low, high = sorted((sign * found["low"], sign * found["high"]))
    scale, unit = (100, " points") if kind == "pct" else (1, " years")
    shown = [round(scale * end, 2) + 0.0 for end in (low, high)]  # + 0.0: never "-0.00"
    text = f"95 % interval {shown[0]:+.2f} to {shown[1]:+.2f}{unit}"
    return f"{text}, indistinguishable on this split" if low <= 0 <= high else text
