"""The ensemble of the trained models: its weights, chosen on val, and how it combines them.

Plain numpy, no Keras: evaluate fits and writes the weights (reports/eval/ensemble.json),
the predictor and the API read them back by model name through `read_weights`, which
refuses a file that is not what evaluate writes (a tampered weight would silently give
ages of 130 years or probabilities above 1).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np

from agegender.errors import UserError

TASKS = ("age", "gender")


def ensemble_weights(
    preds: dict[str, np.ndarray], age: np.ndarray, gender: np.ndarray, step: float = 0.05
) -> dict[str, dict[str, float]]:
    """Each model's weight in the ensemble, per task, chosen on the faces given (val).

    Age: the weights with the lowest MAE; gender: those with the lowest log loss (smoother
    than accuracy on 1,000 faces). Searched over a grid on the simplex, ties to the most even.
    `preds` maps model -> (N, 2) age and P(female).
    """
    keys = list(preds)
    ticks = np.arange(0, 1 + step / 2, step)
    grid = [w for w in itertools.product(ticks, repeat=len(keys)) if abs(sum(w) - 1) < 1e-9]
    grid.sort(key=lambda w: np.ptp(w))  # most even first, so ties keep it
    stack = np.stack([preds[k] for k in keys])  # (models, N, 2)
    p = np.clip(stack[:, :, 1], 1e-6, 1 - 1e-6)

    def age_error(w) -> float:
        return float(np.mean(np.abs(np.tensordot(w, stack[:, :, 0], 1) - age)))

    def gender_loss(w) -> float:
        q = np.tensordot(w, p, 1)
        return float(-np.mean(gender * np.log(q) + (1 - gender) * np.log(1 - q)))

    def most_even_best(score) -> tuple:
        values = [score(w) for w in grid]
        floor = min(values) + 1e-9 * max(1.0, abs(min(values)))  # float noise is a tie
        return next(w for w, v in zip(grid, values, strict=True) if v <= floor)

    best = {"age": most_even_best(age_error), "gender": most_even_best(gender_loss)}
    return {
        task: {k: round(float(v), 4) for k, v in zip(keys, w, strict=True)}
        for task, w in best.items()
    }


def combine(preds: dict[str, np.ndarray], weights: dict[str, dict[str, float]]) -> np.ndarray:
    """(N, 2) ensemble prediction: each task's weighted mean of the models' predictions."""
    age = sum(weights["age"][k] * preds[k][:, 0] for k in preds)
    gender = sum(weights["gender"][k] * preds[k][:, 1] for k in preds)
    return np.stack([age, gender], axis=1).astype("float32")


def finite_number(value: object) -> bool:
    """A JSON number that is neither NaN nor infinite (true and false are no numbers; an
    integer too large for a float is not finite either)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def read_weights(path: Path, models: list[str]) -> dict[str, dict[str, float]]:
    """ensemble.json, checked: each task gives every model in `models` a finite weight in
    [0, 1], by name, and the weights of a task sum to 1."""
    fix = "rewrite it with `dvc repro evaluate` (or delete it for equal weights)"
    try:
        weights = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not readable JSON ({type(error).__name__}); {fix}") from None
    want = f"{{task: {{model: weight}}}} for tasks {list(TASKS)} and models {models}"
    if not isinstance(weights, dict) or sorted(weights) != sorted(TASKS):
        raise UserError(f"{path}: expected {want}; {fix}")
    for task in TASKS:
        block = weights[task]
        if not isinstance(block, dict) or sorted(block) != sorted(models):
            raise UserError(f"{path}: {task}: expected weights for exactly {models}; {fix}")
        for model, w in block.items():
            ok = finite_number(w)
            if not ok or not 0 <= w <= 1:
                raise UserError(
                    f"{path}: {task}.{model} = {w!r}: a weight is a number in [0, 1]; {fix}"
                )
        if abs(sum(block.values()) - 1) > 1e-3:
            raise UserError(
                f"{path}: {task}: the weights sum to {sum(block.values()):g}, not 1; {fix}"
            )
    return {task: {m: float(weights[task][m]) for m in models} for task in TASKS}
