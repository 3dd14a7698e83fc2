"""What agegender-calibrate fits on a user's faces: the evaluate stage's age range and
gender temperature (calibration.choose_ranges and fit_temperature, the same code), after a
monotone correction of the predicted age where it helps.

A model that makes a population too young needs more than a wider range: on faces it
misjudges by a few years the range is centred in the wrong place. The correction is chosen
among none, a line (age = a + b * predicted, b > 0) and an isotonic map by 2-fold
cross-validated MAE on the fitting faces, and kept only when it beats no correction there.
The range is fitted on the cross-validated (out-of-fold) corrected ages, so it is as wide as
the correction's errors on faces it did not see.
"""

from __future__ import annotations

import numpy as np

from agegender.evaluate import calibration as C
from agegender.labels import MAX_AGE

AGE_MAPS = ("none", "linear", "isotonic")


def fit_age_map(predicted: np.ndarray, age: np.ndarray, kind: str) -> dict | None:
    """The knots {"x", "y"} of a monotone map from predicted to true age (calibration.map_age
    applies it); None for "none", or a line that does not increase."""
    if kind == "none" or np.ptp(predicted) < 1e-6:  # one answer for every face: no map
        return None
    lo, hi = (
        float(np.clip(predicted.min(), 0, MAX_AGE)),
        float(np.clip(predicted.max(), 0, MAX_AGE)),
    )
    if kind == "linear":
        slope, intercept = np.polyfit(predicted, age, 1)
        if slope <= 0 or hi <= lo:
            return None
        x = np.array([lo, hi])
        y = np.clip(intercept + slope * x, 0, MAX_AGE)
    else:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0, y_max=MAX_AGE, out_of_bounds="clip").fit(predicted, age)
        x, y = iso.X_thresholds_, iso.y_thresholds_
        x, first = np.unique(x, return_index=True)
        y = np.maximum.accumulate(y[first])
        if len(x) < 2:
            return None
    return {"x": [round(float(v), 3) for v in x], "y": [round(float(v), 3) for v in y]}


def choose_age_map(
    predicted: np.ndarray, age: np.ndarray, seed: int
) -> tuple[str, dict | None, np.ndarray, dict]:
    """(kind, knots, out-of-fold corrected ages, {kind: CV MAE}): the kind with the lowest
    2-fold cross-validated MAE, "none" on a tie; knots refitted on all the faces."""
    order = np.random.default_rng(seed).permutation(len(age))
    folds = [order[::2], order[1::2]]
    out_of_fold, cv_mae = {}, {}
    for kind in AGE_MAPS:
        corrected = np.empty(len(age))
        for fit, held in (folds, folds[::-1]):
            knots = fit_age_map(predicted[fit], age[fit], kind)
            corrected[held] = C.map_age(predicted[held], knots)
        out_of_fold[kind] = corrected
        cv_mae[kind] = round(float(np.mean(np.abs(corrected - age))), 3)
    best = min(AGE_MAPS, key=lambda k: (cv_mae[k], k != "none"))
    return best, fit_age_map(predicted, age, best), out_of_fold[best], cv_mae


def fit_block(
    pred: np.ndarray,
    age: np.ndarray,
    gender: np.ndarray,
    level: float,
    seed: int,
    out_of_fold: np.ndarray | None = None,
    prior_temperature: float = 1.0,
) -> dict:
    """One model's calibration block, as calibration.read checks it, fitted on these faces:
    `pred` (N, 2) raw age and P(female); `gender` -1 where unlabelled. `out_of_fold`: the
    model's own cross-fitted predictions on these faces when it was trained on them
    (agegender-calibrate --adapt), else `pred`. `prior_temperature`: the model's own gender
    temperature, kept unless a refit does better (choose_temperature)."""
    raw = pred if out_of_fold is None else out_of_fold
    kind, knots, corrected, cv_mae = choose_age_map(raw[:, 0], age, seed)
    ranges = C.choose_ranges(corrected, age, level, seed)
    temperature, temperature_choice = choose_temperature(
        raw[gender >= 0, 1], gender[gender >= 0], prior_temperature, seed
    )
    block: dict = {"age_range": ranges, "gender_temperature": temperature}
    if knots is not None:
        block["age_map"] = knots
    block["age_map_choice"] = {"kind": kind, "cv_mae": cv_mae}
    block["temperature_choice"] = temperature_choice
    return block


def choose_temperature(
    prob: np.ndarray, gender: np.ndarray, prior: float, seed: int
) -> tuple[float, dict]:
    """The temperature refitted on these faces, or `prior` (the model's own, fitted on
    UTKFace val) when the refit does not lower the 2-fold cross-validated log loss: a
    temperature fitted on a few hundred faces is noisy, and calibration already held up on
    other collections. No gender labels: `prior`."""
    if len(gender) < 2 or len(np.unique(gender)) < 2:
        return prior, {"kept": "prior", "cv_log_loss": None}
    order = np.random.default_rng(seed).permutation(len(gender))
    folds = [order[::2], order[1::2]]
    refit = np.empty(len(gender))
    for fit, held in (folds, folds[::-1]):
        refit[held] = C.scale(prob[held], C.fit_temperature(prob[fit], gender[fit]))
    losses = {
        "refit": round(C.log_loss(refit, gender), 5),
        "prior": round(C.log_loss(C.scale(prob, prior), gender), 5),
    }
    if losses["refit"] < losses["prior"]:
        return C.fit_temperature(prob, gender), {"kept": "refit", "cv_log_loss": losses}
    return prior, {"kept": "prior", "cv_log_loss": losses}
