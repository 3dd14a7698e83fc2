"""From the raw UTKFace files to a table of faces: decoded, checked, deduplicated, split.

The `prepare` stage calls these in order; every step is deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agegender import params as P
from agegender.errors import UserError
from agegender.labels import AGE_BUCKETS, RACES, UNKNOWN_RACE, age_bucket
from agegender.layout import SPLIT_NAMES

STATUSES = ("ok", "malformed", "duplicate", "conflict", "unreadable")


def assign_status(faces: pd.DataFrame, readable: np.ndarray) -> None:
    """Fill faces.status/reason: ok, malformed, unreadable, duplicate or conflict."""
    faces["status"] = np.where(~faces.usable, "malformed", np.where(readable, "ok", "unreadable"))
    faces["reason"] = faces.problem
    unreadable = faces.status == "unreadable"
    faces.loc[unreadable, "reason"] = faces.read_problem[unreadable].replace(
        "", "cannot be decoded as an image"
    )
    candidates = faces[faces.status == "ok"]
    for _, group in candidates.groupby("sha256", sort=False):
        if len(group) == 1:
            continue
        labels = set(zip(group.age, group.gender, group.race, strict=True))
        others = ", ".join(group.name)
        if len(labels) == 1:
            faces.loc[group.index[1:], ["status", "reason"]] = [
                "duplicate",
                f"same image as {group.name.iloc[0]}",
            ]
        else:
            faces.loc[group.index, ["status", "reason"]] = [
                "conflict",
                f"same image, different labels: {others}",
            ]


def stratified_take(
    idx: np.ndarray, strata: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw n of idx so each stratum keeps its share (largest remainder); return (taken, rest)."""
    if n == 0 or len(idx) == 0:
        return np.array([], int), idx
    keys, counts = np.unique(strata, return_counts=True)
    exact = counts * n / len(idx)
    quota = np.floor(exact).astype(int)
    short = n - quota.sum()
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    taken = []
    for key, q in zip(keys, quota, strict=True):
        members = idx[strata == key]
        taken.append(rng.permutation(members)[:q])
    chosen = np.sort(np.concatenate(taken)) if taken else np.array([], int)
    return chosen, np.setdiff1d(idx, chosen)


def split(faces: pd.DataFrame, data: P.Data, seed: int) -> pd.Series:
    """Seeded subset -> train/val, and a test split from the usable faces left over.

    data.train_all then adds the faces still unused to train: val and test are the same
    faces as without it, so the two runs' scores compare face for face.
    """
    usable = faces.index[faces.status == "ok"].to_numpy()
    if len(usable) == 0:
        counts = faces.status.value_counts()
        by_status = ", ".join(f"{s} {counts[s]}" for s in STATUSES if counts.get(s, 0))
        raise UserError(
            f"{data.raw}: holds no usable face ({len(faces)} files: {by_status}); see the "
            f"README's Data section for the names and formats prepare reads"
        )
    if len(usable) < data.subset_size:
        raise UserError(
            f"params.yaml: data.subset_size is {data.subset_size} but {data.raw} has only "
            f"{len(usable)} usable faces; lower data.subset_size"
        )
    strata = (
        faces.gender * len(AGE_BUCKETS) + age_bucket(faces.age.fillna(0).astype(int))
    ).to_numpy()
    rng = np.random.default_rng(seed)
    subset, rest = stratified_take(usable, strata[usable], data.subset_size, rng)
    val, train = stratified_take(subset, strata[subset], data.val_size, rng)
    test, unused = stratified_take(rest, strata[rest], min(data.test_size, len(rest)), rng)
    if data.train_all:  # drawn after val and test, so both stay the faces of the default split
        train = np.union1d(train, unused)
    out = pd.Series("", index=faces.index, dtype=object)
    out[faces.status == "ok"] = "unused"
    for name, rows in (("train", train), ("val", val), ("test", test)):
        out[rows] = name
    return out


def summarize(faces: pd.DataFrame, source: str) -> dict:
    def describe(rows: pd.DataFrame) -> dict:
        buckets = np.bincount(age_bucket(rows.age.astype(int)), minlength=len(AGE_BUCKETS))
        races = rows.race.map(lambda r: "Unknown" if r == UNKNOWN_RACE else RACES[r])
        return {
            "n": len(rows),
            "female_fraction": round(float(rows.gender.mean()), 4) if len(rows) else 0.0,
            "age_mean": round(float(rows.age.mean()), 2) if len(rows) else 0.0,
            "age_histogram": dict(zip(AGE_BUCKETS, buckets.tolist(), strict=True)),
            "race": {r: int(c) for r, c in races.value_counts().sort_index().items()},
        }

    status = faces.status.value_counts()
    odd = faces[faces.problem != ""]
    return {
        "source": source,
        "files": len(faces),
        "status": {s: int(status.get(s, 0)) for s in STATUSES},
        "malformed_names": len(odd),
        "malformed_names_recovered": int(odd.usable.sum()),
        "malformed_name_files": dict(zip(odd.name, odd.problem, strict=True)),
        "conflict_groups": int(faces[faces.status == "conflict"].sha256.nunique()),
        "duplicate_groups": int(faces[faces.status == "duplicate"].sha256.nunique()),
        "splits": {s: describe(faces[faces.split == s]) for s in SPLIT_NAMES},
    }
