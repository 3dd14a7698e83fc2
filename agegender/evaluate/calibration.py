"""How much to trust one prediction: an age range with a stated coverage and a calibrated
gender probability, both fitted on val only (evaluate writes them to calibration.json).

Plain numpy and scipy, no Keras: the predictor and the API apply the same few numbers.

- Age range: split conformal prediction on the residuals (true - predicted age) of val.
  Three ways are fitted and the narrowest whose coverage holds in 2-fold cross-validation
  on val, overall and in each bucket of predicted age, is kept: one constant +-; one +- per
  bucket of predicted age
  (Mondrian conformal: wider where the model errs more, at 70+, narrower for children); and
  asymmetric bounds per bucket (the models underestimate the old and overestimate the young).
  Each keeps the finite-sample guarantee of split conformal within its bucket.
- Gender: temperature scaling of the logit of P(female), fitted by log loss on val
  (Guo et al. 2017): one number per model, it changes no decision at 0.5.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from agegender.errors import UserError
from agegender.evaluate.ensemble import finite_number
from agegender.labels import MAX_AGE

# Buckets of *predicted* age for the per-bucket ranges (a user knows only the prediction).
AGE_EDGES = (0.0, 6.0, 15.0, 25.0, 35.0, 50.0, 65.0)
MIN_BUCKET = 40  # fewer val faces than this: the bucket is merged into its neighbour
BUCKET_SLACK = 0.06  # a bucket of ~100 faces measures 80 % coverage to about +-4 points
METHODS = ("constant", "per_bucket", "per_bucket_asymmetric")
EPS = 1e-6
TEMPERATURES = (0.05, 20.0)  # fit_temperature's bounds: a file outside them was not fitted
USER = "user"  # the one block of a file agegender-calibrate writes


def conformal_rank(n: int, level: float) -> int:
    """The 1-based rank of the split-conformal quantile: ceil((n + 1) * level), at most n."""
    return min(n, math.ceil((n + 1) * level))


def upper_quantile(scores: np.ndarray, level: float) -> float:
    """The smallest q with P(score <= q) >= level for a new exchangeable score."""
    if len(scores) == 0:
        return math.inf
    return float(np.sort(scores)[conformal_rank(len(scores), level) - 1])


def bucket_edges(predicted: np.ndarray) -> list[float]:
    """AGE_EDGES with sparse buckets merged, so each holds MIN_BUCKET faces or more."""
    edges = list(AGE_EDGES)
    while len(edges) > 1:
        counts = np.histogram(predicted, [*edges, math.inf])[0]
        small = [i for i, c in enumerate(counts) if c < MIN_BUCKET]
        if not small:
            break
        i = small[0]
        del edges[i if i > 0 else 1]  # merge into the bucket below (the first: above)
    return edges


def bucket_of(predicted: np.ndarray, edges: list[float]) -> np.ndarray:
    """The bucket [edges[i], edges[i + 1]) of each prediction; one below the first edge (a
    linear age head can say -0.4) is in the first bucket, never index -1 (the last)."""
    which = np.searchsorted(np.asarray(edges), predicted, side="right") - 1
    return np.maximum(which, 0)


def fit_ranges(
    predicted: np.ndarray, age: np.ndarray, level: float, method: str, edges: list | None = None
) -> dict:
    """{"edges": [...], "low": [...], "high": [...]}: the range of a face in bucket i is
    [predicted + low[i], predicted + high[i]] (low <= 0 <= high in practice). `edges`: the
    buckets to use (default: bucket_edges of these predictions)."""
    residual = np.asarray(age, "float64") - np.asarray(predicted, "float64")
    if method == "constant":
        edges = [0.0]
    elif edges is None:
        edges = bucket_edges(predicted)
    which = bucket_of(predicted, edges)
    low, high = [], []
    for i in range(len(edges)):
        r = residual[which == i]
        if method == "per_bucket_asymmetric":  # each tail gets half of 1 - level
            tail = (1 + level) / 2
            # widened to hold the prediction itself: a range beside the answer it
            # qualifies would read as a contradiction (only a one-sided bias gives one)
            low.append(min(0.0, -upper_quantile(-r, tail)))
            high.append(max(0.0, upper_quantile(r, tail)))
        else:
            q = upper_quantile(np.abs(r), level)
            low.append(-q)
            high.append(q)
    return {"edges": edges, "low": low, "high": high}


def age_range(predicted: np.ndarray, ranges: dict) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) ages for each prediction, clipped to [0, MAX_AGE]."""
    predicted = np.asarray(predicted, "float64")
    which = bucket_of(predicted, ranges["edges"])
    low = predicted + np.asarray(ranges["low"])[which]
    high = predicted + np.asarray(ranges["high"])[which]
    return np.clip(low, 0.0, MAX_AGE), np.clip(high, 0.0, MAX_AGE)


def map_age(predicted: np.ndarray, age_map: dict | None) -> np.ndarray:
    """A fitted monotone correction of predicted ages (agegender-calibrate's `age_map`):
    linear between its knots, a constant shift beyond them (the end knots' offsets), so it
    stays increasing everywhere. None: the ages as they are."""
    predicted = np.asarray(predicted, "float64")
    if age_map is None:
        return predicted
    x, y = np.asarray(age_map["x"], "float64"), np.asarray(age_map["y"], "float64")
    inside = np.interp(predicted, x, y)
    below, above = predicted + (y[0] - x[0]), predicted + (y[-1] - x[-1])
    return np.where(predicted < x[0], below, np.where(predicted > x[-1], above, inside))


def apply(block: dict, age: np.ndarray, prob: np.ndarray) -> dict[str, np.ndarray]:
    """One model's calibration block on raw predictions: the corrected age (age_map, when
    the block has one), its range, and the temperature-scaled P(female). The one place the
    predictor, the API and agegender-evaluate apply a calibration."""
    corrected = map_age(age, block.get("age_map"))
    low, high = age_range(corrected, block["age_range"])
    return {
        "age": corrected,
        "age_low": low,
        "age_high": high,
        "gender_prob": scale(prob, block["gender_temperature"]),
    }


def choose_ranges(predicted: np.ndarray, age: np.ndarray, level: float, seed: int) -> dict:
    """The narrowest method (mean width) whose 2-fold cross-validated coverage on val holds
    overall (within 2 points of `level`) and in every bucket of predicted age (within
    BUCKET_SLACK): a constant +- that covers children always and the old rarely does not
    count as holding. Refitted on all of val; every method's CV figures are kept."""
    order = np.random.default_rng(seed).permutation(len(age))
    folds = [order[::2], order[1::2]]
    # The buckets come from all of val, so that a fold (half the faces) fits the same ones:
    # merged on a fold's own counts, children of 6-15 joined the under-6s, whose errors are
    # a year, and their ranges covered half of them.
    edges = bucket_edges(predicted)
    buckets = bucket_of(predicted, edges)
    tried = {}
    for method in METHODS:
        inside = np.zeros(len(age), bool)
        width = np.zeros(len(age))
        for fit, held in (folds, folds[::-1]):
            ranges = fit_ranges(predicted[fit], age[fit], level, method, edges)
            low, high = age_range(predicted[held], ranges)
            inside[held] = (age[held] >= low) & (age[held] <= high)
            width[held] = high - low
        per_bucket = [float(inside[buckets == b].mean()) for b in np.unique(buckets)]
        tried[method] = {
            "cv_coverage": round(float(inside.mean()), 4),
            "cv_worst_bucket_coverage": round(min(per_bucket), 4),
            "cv_mean_width": round(float(width.mean()), 3),
        }
    holding = [m for m in METHODS if holds(tried[m], level)]
    best = (
        min(holding, key=lambda m: tried[m]["cv_mean_width"])
        if holding
        else max(METHODS, key=lambda m: tried[m]["cv_worst_bucket_coverage"])
    )
    return {"method": best, **fit_ranges(predicted, age, level, best, edges), "tried": tried}


def holds(cv: dict, level: float) -> bool:
    """A method's cross-validated coverage holds: overall within 2 points of `level`, in its
    worst bucket within BUCKET_SLACK. The bounds are rounded like the figures (4 digits):
    0.9 - 0.06 is 0.8400000000000001 in floats, which a measured 0.84 would miss."""
    overall, worst = round(level - 0.02, 4), round(level - BUCKET_SLACK, 4)
    return cv["cv_coverage"] >= overall and cv["cv_worst_bucket_coverage"] >= worst


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, "float64"), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def scale(p: np.ndarray, temperature: float) -> np.ndarray:
    """P(female) with its logit divided by the temperature (> 1 softens, < 1 sharpens)."""
    return 1 / (1 + np.exp(-logit(p) / temperature))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(np.asarray(p, "float64"), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The temperature in TEMPERATURES with the lowest log loss on (p, y)."""
    from scipy import optimize  # here: evaluate fits, the API only applies (0.3 s to import)

    bounds = tuple(math.log(t) for t in TEMPERATURES)
    found = optimize.minimize_scalar(
        lambda t: log_loss(scale(p, math.exp(t)), y), bounds=bounds, method="bounded"
    )
    return min(max(round(math.exp(found.x), 4), TEMPERATURES[0]), TEMPERATURES[1])


def ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the predicted class's confidence, equal-width bins."""
    p = np.asarray(p, "float64")
    confidence = np.maximum(p, 1 - p)
    correct = (p >= 0.5) == (np.asarray(y) == 1)
    which = np.minimum(((confidence - 0.5) * 2 * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, "float64") - y) ** 2))


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict]:
    """Per bin of P(female): mean predicted probability, observed share of women, faces."""
    p = np.asarray(p, "float64")
    which = np.minimum((p * bins).astype(int), bins - 1)
    return [
        {
            "bin": b,
            "predicted": float(p[which == b].mean()),
            "observed": float(y[which == b].mean()),
            "n": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]


def read(path: Path, model: str, version: int = 1) -> dict:
    """One model's block of calibration.json (or of a file agegender-calibrate wrote),
    checked: the right version; bucket edges ascending from 0; per bucket a finite range
    that holds the prediction (low <= 0 <= high) and spans at most MAX_AGE years; a
    temperature within fit_temperature's bounds; an age map, when there is one, of
    ascending knots and increasing ages within 0-MAX_AGE. Any other file stops with one
    line naming it: a NaN or negative temperature would silently flip genders, a huge one
    makes every face 50 % female."""
    fix = "rewrite it with `dvc repro evaluate` (or agegender-calibrate for your own file)"
    try:
        data = json.loads(path.read_text())
        block = data["models"][model]
        ranges, temperature = block["age_range"], block["gender_temperature"]
        edges, low, high = list(ranges["edges"]), list(ranges["low"]), list(ranges["high"])
        age_map = block.get("age_map")
        knots = (list(age_map["x"]), list(age_map["y"])) if age_map is not None else ([], [])
        ok_version = data["version"] == version
    except FileNotFoundError:
        raise UserError(f"{path}: not found; {fix} (or pass --no-range)") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise UserError(
            f"{path}: no calibration for {model} ({type(error).__name__}); {fix}"
        ) from None
    if not all(finite_number(v) for v in [*edges, *low, *high, temperature, *knots[0], *knots[1]]):
        raise UserError(f"{path}: {model}: every number must be finite; {fix}")
    problems = []
    if not ok_version:
        problems.append(f"version {version}")
    if not (len(edges) == len(low) == len(high) >= 1 and edges[0] == 0):
        problems.append("bucket edges starting at 0 with one low and one high bound each")
    elif any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or edges[-1] > MAX_AGE:
        problems.append(f"strictly ascending bucket edges up to {MAX_AGE}")
    if any(not lo <= 0 <= hi or hi - lo > MAX_AGE for lo, hi in zip(low, high, strict=False)):
        problems.append(f"ranges with low <= 0 <= high, at most {MAX_AGE} years wide")
    if not TEMPERATURES[0] <= temperature <= TEMPERATURES[1]:
        problems.append(f"a gender temperature in {TEMPERATURES[0]}-{TEMPERATURES[1]}")
    x, y = knots
    if age_map is not None and not (
        len(x) == len(y) >= 2
        and all(b > a for a, b in zip(x, x[1:], strict=False))
        and all(b >= a for a, b in zip(y, y[1:], strict=False))
        and all(0 <= v <= MAX_AGE for v in (*x, *y))
    ):
        problems.append(f"an age map of ascending knots and increasing ages in 0-{MAX_AGE}")
    if problems:
        raise UserError(f"{path}: {model}: needs {'; '.join(problems)}; {fix}")
    return block


def fitted_for(path: Path) -> str:
    """The model a file of agegender-calibrate's was fitted for: "A", "B", "ensemble", or a
    model file (a relative path is relative to the calibration file's folder)."""
    try:
        model = json.loads(path.read_text())["model"]
    except FileNotFoundError:
        raise UserError(f"{path}: not found; write it with agegender-calibrate") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise UserError(
            f"{path}: not a calibration file of agegender-calibrate ({type(error).__name__}); "
            f"write it with agegender-calibrate"
        ) from None
    if not isinstance(model, str) or not model:
        raise UserError(f"{path}: `model` must name the model it was fitted for")
    if model in ("A", "B", "ensemble") or os.path.isabs(model):
        return model
    return str(path.parent / model)
