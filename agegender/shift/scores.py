"""The scores of one model on a user's labelled faces: what evaluate measures on UTKFace's
test split (metrics.scores, the calibration's range and temperature: the same code), plus
what a shift shows: the mean signed error, per age bucket, and age-group accuracy when the
labels are groups."""

from __future__ import annotations

import numpy as np

from agegender.evaluate import calibration as C
from agegender.evaluate.metrics import age_scores, gender_scores
from agegender.labels import AGE_BUCKETS, age_bucket
from agegender.shift.labelled import Faces


def age_rows(age: np.ndarray, corrected: np.ndarray, low, high) -> dict:
    """evaluate's age scores (MAE, RMSE, within 5 years), the mean signed error (+: too
    old), and the range's coverage and mean width (None without a range)."""
    out = {"n": int(len(age)), **age_scores(age, corrected)}
    out["mean_signed_error"] = round(float(np.mean(corrected - age)), 3)
    out["coverage"] = out["mean_width"] = None
    if low is not None:
        out["coverage"] = round(float(np.mean((age >= low) & (age <= high))), 4)
        out["mean_width"] = round(float(np.mean(high - low)), 2)
    return out


def group_scores(faces: Faces, predicted: np.ndarray) -> dict | None:
    """Age groups (Adience-style labels): the share of faces whose predicted age is nearest
    their own group among the groups in the labels, and within one group of it."""
    grouped = np.isnan(faces.age) & ~np.isnan(faces.low)
    if not grouped.any():
        return None
    groups = sorted(
        {(lo, hi) for lo, hi in zip(faces.low[grouped], faces.high[grouped], strict=True)}
    )
    lows, highs = np.array([g[0] for g in groups]), np.array([g[1] for g in groups])
    pred = predicted[grouped][:, None]
    distance = np.maximum(lows - pred, 0) + np.maximum(pred - highs, 0)  # 0 inside a group
    nearest = distance.argmin(axis=1)
    truth = np.array(
        [
            groups.index((lo, hi))
            for lo, hi in zip(faces.low[grouped], faces.high[grouped], strict=True)
        ]
    )
    return {
        "n": int(grouped.sum()),
        "groups": [f"{lo:g}-{hi:g}" for lo, hi in groups],
        "group_accuracy": round(float(np.mean(nearest == truth)), 4),
        "one_group_off": round(float(np.mean(np.abs(nearest - truth) <= 1)), 4),
    }


def score(faces: Faces, pred: np.ndarray, block: dict | None) -> dict:
    """Every number agegender-evaluate prints and writes for one model. `pred` (N, 2) raw
    age and P(female), NaN where no face was read; `block` the model's calibration (its age
    correction, range and temperature), or None."""
    read = ~np.isnan(pred[:, 0])
    f, p = faces.subset(np.flatnonzero(read)), pred[read]
    fitted = C.apply(block, p[:, 0], p[:, 1]) if block is not None else None
    corrected = fitted["age"] if fitted else p[:, 0]
    out: dict = {"faces": len(faces), "scored": int(read.sum())}
    exact, gendered = ~np.isnan(f.age), f.gender >= 0
    if exact.any():
        low, high = (
            (fitted["age_low"][exact], fitted["age_high"][exact]) if fitted else (None, None)
        )
        out["age"] = age_rows(f.age[exact], corrected[exact], low, high)
        which = age_bucket(f.age[exact].astype(int))
        out["buckets"] = {
            bucket: age_rows(
                f.age[exact][which == b],
                corrected[exact][which == b],
                None if low is None else low[which == b],
                None if high is None else high[which == b],
            )
            for b, bucket in enumerate(AGE_BUCKETS)
            if (which == b).any()
        }
    if gendered.any():
        y, raw = f.gender[gendered], p[gendered, 1]
        out["gender"] = {
            "n": int(gendered.sum()),
            **gender_scores(y, raw),
            "ece_raw": round(C.ece(raw, y), 4),
            "ece": round(C.ece(fitted["gender_prob"][gendered], y), 4) if fitted else None,
        }
    groups = group_scores(f, corrected)
    if groups is not None:
        out["age_groups"] = groups
    return out
