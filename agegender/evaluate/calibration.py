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
from pathlib import Path

import numpy as np

from agegender.errors import UserError
from agegender.evaluate.ensemble import finite_number

# Buckets of *predicted* age for the per-bucket ranges (a user knows only the prediction).
AGE_EDGES = (0.0, 6.0, 15.0, 25.0, 35.0, 50.0, 65.0)
MIN_BUCKET = 40  # fewer val faces than this: the bucket is merged into its neighbour
BUCKET_SLACK = 0.06  # a bucket of ~100 faces measures 80 % coverage to about +-4 points
METHODS = ("constant", "per_bucket", "per_bucket_asymmetric")
EPS = 1e-6


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
    return np.searchsorted(np.asarray(edges), predicted, side="right") - 1


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
            low.append(-upper_quantile(-r, tail))
            high.append(upper_quantile(r, tail))
        else:
            q = upper_quantile(np.abs(r), level)
            low.append(-q)
            high.append(q)
    return {"edges": edges, "low": low, "high": high}


def age_range(predicted: np.ndarray, ranges: dict) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) ages for each prediction, clipped at 0."""
    which = bucket_of(np.asarray(predicted, "float64"), ranges["edges"])
    low = predicted + np.asarray(ranges["low"])[which]
    high = predicted + np.asarray(ranges["high"])[which]
    return np.maximum(low, 0.0), high


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
    holding = [
        m
        for m in METHODS
        if tried[m]["cv_coverage"] >= level - 0.02
        and tried[m]["cv_worst_bucket_coverage"] >= level - BUCKET_SLACK
    ]
    best = (
        min(holding, key=lambda m: tried[m]["cv_mean_width"])
        if holding
        else max(METHODS, key=lambda m: tried[m]["cv_worst_bucket_coverage"])
    )
    return {"method": best, **fit_ranges(predicted, age, level, best, edges), "tried": tried}


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
    """The temperature in [0.05, 20] with the lowest log loss on (p, y)."""
    from scipy import optimize  # here: evaluate fits, the API only applies (0.3 s to import)

    found = optimize.minimize_scalar(
        lambda t: log_loss(scale(p, math.exp(t)), y), bounds=(-3.0, 3.0), method="bounded"
    )
    return round(math.exp(found.x), 4)


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
    """One model's block of calibration.json, checked: the right version, ascending bucket
    edges with finite bounds low <= high, a finite positive temperature. Any other file stops
    with one line naming it (a NaN or negative temperature would silently flip genders)."""
    fix = "rewrite it with `dvc repro evaluate`"
    try:
        data = json.loads(path.read_text())
        block = data["models"][model]
        ranges, temperature = block["age_range"], block["gender_temperature"]
        edges, low, high = ranges["edges"], ranges["low"], ranges["high"]
        ok_version = data["version"] == version
    except FileNotFoundError:
        raise UserError(f"{path}: not found; {fix} (or pass --no-range)") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{path}: no calibration for {model} ({type(error).__name__}); {fix}"
        ) from None
    numbers = [*edges, *low, *high, temperature]
    finite = all(finite_number(v) for v in numbers)
    shaped = len(edges) == len(low) == len(high) >= 1 and list(edges) == sorted(edges)
    if not ok_version or not finite or not shaped or temperature <= 0:
        raise UserError(
            f"{path}: {model}: needs version {version}, ascending edges and finite bounds per "
            f"bucket and a temperature > 0; {fix}"
        )
    if any(lo > hi for lo, hi in zip(low, high, strict=True)):
        raise UserError(f"{path}: {model}: a range's low bound is above its high bound; {fix}")
    return block
