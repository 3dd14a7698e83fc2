"""Scores for age and gender predictions: one definition for every model and split.

Library code (scikit-learn), not hand-written formulas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics

from agegender.data import Split
from agegender.labels import AGE_BUCKETS, RACES, age_bucket
from agegender.layout import MODELS
from agegender.metric_table import COMPARED, SCORES

METRIC_KEYS = tuple(score.key for score in SCORES)  # the order of metric_table.SCORES


def gender_scores(gender: np.ndarray, gender_prob: np.ndarray) -> dict:
    """Accuracy, F1 and AUC of P(female) at 0.5 (AUC: None with one class only)."""
    gender, gender_prob = np.asarray(gender, int), np.asarray(gender_prob, float)
    gender_pred = (gender_prob >= 0.5).astype(int)
    both_classes = len(np.unique(gender)) == 2
    return {
        "gender_accuracy": round(float(metrics.accuracy_score(gender, gender_pred)), 4),
        "gender_f1": round(float(metrics.f1_score(gender, gender_pred, zero_division=0)), 4),
        "gender_auc": round(float(metrics.roc_auc_score(gender, gender_prob)), 4)
        if both_classes
        else None,
    }


def age_scores(age: np.ndarray, age_pred: np.ndarray) -> dict:
    """MAE, RMSE and the share within 5 years."""
    age, age_pred = np.asarray(age, float), np.asarray(age_pred, float)
    return {
        "age_mae": round(float(metrics.mean_absolute_error(age, age_pred)), 3),
        "age_rmse": round(float(metrics.root_mean_squared_error(age, age_pred)), 3),
        "age_within_5": round(float(np.mean(np.abs(age - age_pred) <= 5)), 4),
    }


def scores(
    age: np.ndarray, age_pred: np.ndarray, gender: np.ndarray, gender_prob: np.ndarray
) -> dict:
    """The metrics.json block for one model on one split."""
    if len(age) == 0:
        return {key: None for key in METRIC_KEYS[:-1]} | {"n": 0}
    return gender_scores(gender, gender_prob) | age_scores(age, age_pred) | {"n": int(len(age))}


def compared(scores: dict) -> dict:
    """reports/metrics.json: per model (A, B, AB for the ensemble), val and test gender
    accuracy (acc) and age MAE (mae), 12 numbers. Only what a person compares between runs,
    under names short enough that `dvc exp show` fits them in a 200-column terminal; every
    other score is in reports/eval/scores_*.json, training times in reports/train_*/."""
    return {
        model.metrics_key: {
            f"{split}_{score.short}": scores[key][split][score.key]
            for split in ("val", "test")
            for score in COMPARED
            if scores[key][split]["n"]
        }
        for key, model in MODELS.items()
    }


def breakdown(split: Split, pred: np.ndarray) -> pd.DataFrame:
    """Age MAE and gender accuracy per age bucket, race and gender."""
    frame = pd.DataFrame(
        {
            "bucket": np.array(AGE_BUCKETS)[age_bucket(split.age)],
            "race": [RACES[r] if r >= 0 else "Unknown" for r in split.race],
            "gender": np.where(split.gender == 1, "female", "male"),
            "abs_error": np.abs(pred[:, 0] - split.age),
            "correct": (pred[:, 1] >= 0.5) == (split.gender == 1),
        }
    )
    rows = []
    for kind in ("bucket", "race", "gender"):
        for group, part in frame.groupby(kind, sort=False):
            rows.append(
                {
                    "kind": kind,
                    "group": group,
                    "n": len(part),
                    "age_mae": round(part.abs_error.mean(), 3),
                    "gender_accuracy": round(part.correct.mean(), 4),
                }
            )
    order = {"bucket": AGE_BUCKETS, "race": [*RACES, "Unknown"], "gender": ["male", "female"]}
    table = pd.DataFrame(rows)
    table["order"] = [order[k].index(g) for k, g in zip(table.kind, table.group, strict=True)]
    return table.sort_values(["kind", "order"]).drop(columns="order").reset_index(drop=True)
