"""95 % bootstrap intervals on test scores and on the differences between models.

Paired: every resample draws the same faces for every model, so the interval on a
difference accounts for the faces both models find hard (much narrower than comparing two
separate intervals). Percentile intervals, seeded from params.yaml's seed.
"""

from __future__ import annotations

import numpy as np

CHUNK = 100  # resamples drawn at a time: memory stays at CHUNK x faces indices


def per_face(age: np.ndarray, gender: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """What each score averages over faces: right or wrong gender, absolute age error."""
    return {
        "gender_accuracy": ((pred[:, 1] >= 0.5) == (gender == 1)).astype("float64"),
        "age_mae": np.abs(pred[:, 0].astype("float64") - age),
        "age_within_5": (np.abs(pred[:, 0].astype("float64") - age) <= 5).astype("float64"),
    }


def bootstrap(
    values: dict[str, dict[str, np.ndarray]],
    pairs: list[tuple[str, str]],
    resamples: int,
    seed: int,
) -> dict:
    """values: model -> score -> per-face values. Returns, per score, each model's mean and
    95 % interval, and each pair's difference (second minus first) with its interval."""
    models = list(values)
    scores = list(values[models[0]])
    n = len(values[models[0]][scores[0]])
    rng = np.random.default_rng(seed)
    means = {(m, s): [] for m in models for s in scores}
    for start in range(0, resamples, CHUNK):
        idx = rng.integers(0, n, size=(min(CHUNK, resamples - start), n))
        for m in models:
            for s in scores:
                means[m, s].append(values[m][s][idx].mean(axis=1))
    draws = {key: np.concatenate(v) for key, v in means.items()}

    def summary(point: float, samples: np.ndarray) -> dict:
        low, high = np.percentile(samples, [2.5, 97.5])
        return {
            "value": round(point, 4),
            "low": round(float(low), 4),
            "high": round(float(high), 4),
        }

    out: dict = {"resamples": resamples, "faces": n, "models": {}, "differences": {}}
    for m in models:
        out["models"][m] = {s: summary(float(values[m][s].mean()), draws[m, s]) for s in scores}
    for first, second in pairs:
        out["differences"][f"{second} - {first}"] = {
            s: summary(
                float(values[second][s].mean() - values[first][s].mean()),
                draws[second, s] - draws[first, s],
            )
            for s in scores
        }
    return out
