"""Evaluate's calibration step: fit each model's age range and gender temperature on val,
then measure on the focus split (test) what a user may trust: coverage by age and race,
width, calibration error before and after, and bootstrap intervals on every score.

`calibration.json` (the fitted numbers, versioned, read by the predictor and the API) and
`trust.json` (the measurements, read by the report) are the two results.
"""

from __future__ import annotations

import numpy as np

from agegender.data import Split
from agegender.evaluate import calibration as C
from agegender.evaluate.intervals import bootstrap, per_face
from agegender.labels import AGE_BUCKETS, RACES, age_bucket

VERSION = 1  # calibration.json's format; the readers refuse another


def fit(preds: dict[str, np.ndarray], val: Split, level: float, seed: int) -> dict:
    """calibration.json: per model, the age range (chosen by 2-fold CV on val) and the
    gender temperature, both fitted on val only."""
    models = {}
    for model, pred in preds.items():
        ranges = C.choose_ranges(
            pred[:, 0].astype("float64"), val.age.astype("float64"), level, seed
        )
        models[model] = {
            "age_range": ranges,
            "gender_temperature": C.fit_temperature(pred[:, 1], val.gender),
        }
    return {
        "version": VERSION,
        "level": level,
        "fitted_on": "val",
        "faces": len(val),
        "models": models,
    }


def groups(split: Split) -> dict[str, np.ndarray]:
    """The groups coverage is reported by: true-age bucket and race."""
    return {
        "bucket": np.array(AGE_BUCKETS)[age_bucket(split.age)],
        "race": np.array([RACES[r] if r >= 0 else "Unknown" for r in split.race]),
    }


def measure(
    preds: dict[str, np.ndarray], split: Split, fitted: dict, resamples: int, seed: int
) -> dict:
    """trust.json: on `split`, each model's range coverage and width (overall, per group),
    gender calibration before and after scaling, and the bootstrap intervals."""
    kinds = groups(split)
    gender = split.gender.astype("float64")
    out: dict = {"split_faces": len(split), "level": fitted["level"], "models": {}}
    for model, pred in preds.items():
        cal = fitted["models"][model]
        low, high = C.age_range(pred[:, 0].astype("float64"), cal["age_range"])
        inside = (split.age >= low) & (split.age <= high)
        width = high - low
        by = {
            kind: {
                str(g): {
                    "n": int((labels == g).sum()),
                    "coverage": round(float(inside[labels == g].mean()), 4),
                    "mean_width": round(float(width[labels == g].mean()), 2),
                }
                for g in dict.fromkeys(labels)  # first-seen order; sorted below
            }
            for kind, labels in kinds.items()
        }
        by["bucket"] = {b: by["bucket"][b] for b in AGE_BUCKETS if b in by["bucket"]}
        raw, scaled = pred[:, 1], C.scale(pred[:, 1], cal["gender_temperature"])
        out["models"][model] = {
            "method": cal["age_range"]["method"],
            "gender_temperature": cal["gender_temperature"],
            "coverage": round(float(inside.mean()), 4),
            "mean_width": round(float(width.mean()), 2),
            "by": by,
            "gender": {
                name: {
                    "ece": round(C.ece(p, gender), 4),
                    "brier": round(C.brier(p, gender), 4),
                    "log_loss": round(C.log_loss(p, gender), 4),
                    "reliability": C.reliability(p, gender),
                }
                for name, p in (("before", raw), ("after", scaled))
            },
        }
    values = {m: per_face(split.age.astype("float64"), split.gender, p) for m, p in preds.items()}
    keys = list(preds)
    pairs = [(keys[i], keys[j]) for i in range(len(keys)) for j in range(i + 1, len(keys))]
    out["intervals"] = bootstrap(values, pairs, resamples, seed)
    return out
