"""Numbers a user can trust: conformal age ranges, temperature scaling, bootstrap intervals,
and the calibration file's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agegender.errors import UserError
from agegender.evaluate import calibration as C
from agegender.evaluate.ensemble import read_weights
from agegender.evaluate.intervals import bootstrap


def synthetic_ages(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Predictions whose errors grow with age and lean low for the old, like the models'."""
    age = rng.uniform(1, 90, n)
    predicted = age - 0.05 * (age - 35) + rng.normal(0, 1 + age / 12, n)
    return predicted, age


@pytest.mark.parametrize("method", C.METHODS)
def test_conformal_range_covers_fresh_data_at_the_level(method):
    rng = np.random.default_rng(0)
    fit_pred, fit_age = synthetic_ages(1000, rng)
    ranges = C.fit_ranges(fit_pred, fit_age, 0.8, method)
    coverages = []
    for _ in range(20):  # fresh data each time: the guarantee is over both draws
        pred, age = synthetic_ages(2000, rng)
        low, high = C.age_range(pred, ranges)
        coverages.append(np.mean((age >= low) & (age <= high)))
    assert 0.78 <= np.mean(coverages) <= 0.84, (method, np.mean(coverages))


def test_adaptive_ranges_are_narrow_for_children_and_wide_for_the_old():
    rng = np.random.default_rng(1)
    pred, age = synthetic_ages(3000, rng)
    chosen = C.choose_ranges(pred, age, 0.8, seed=0)
    assert chosen["method"] != "constant"  # the error grows with age: buckets pay
    widths = np.subtract(chosen["high"], chosen["low"])
    assert widths[0] < widths[-1]
    assert set(chosen["tried"]) == set(C.METHODS)


def test_temperature_scaling_lowers_log_loss_on_overconfident_probabilities():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 5000).astype(float)
    true_logit = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.5, 5000)
    overconfident = 1 / (1 + np.exp(-3 * true_logit))
    t = C.fit_temperature(overconfident, y)
    assert t > 1.5  # softens
    after = C.scale(overconfident, t)
    assert C.log_loss(after, y) < C.log_loss(overconfident, y)
    assert C.ece(after, y) < C.ece(overconfident, y)
    assert ((after >= 0.5) == (overconfident >= 0.5)).all()  # no decision changes


def test_bootstrap_intervals_hold_the_true_mean_at_about_95_percent():
    rng = np.random.default_rng(3)
    hits = 0
    trials = 200
    for trial in range(trials):
        a = rng.exponential(5.0, 300)  # true mean 5
        b = a + rng.normal(0.5, 1.0, 300)  # true paired difference 0.5
        out = bootstrap({"a": {"mae": a}, "b": {"mae": b}}, [("a", "b")], 400, seed=trial)
        m, d = out["models"]["a"]["mae"], out["differences"]["b - a"]["mae"]
        hits += (m["low"] <= 5.0 <= m["high"]) + (d["low"] <= 0.5 <= d["high"])
    assert 0.90 <= hits / (2 * trials) <= 0.98, hits / (2 * trials)


def write_calibration(path, **changes) -> None:
    block = {
        "age_range": {"method": "constant", "edges": [0.0], "low": [-5.0], "high": [5.0]},
        "gender_temperature": 1.2,
    }
    block.update(changes)
    path.write_text(json.dumps({"version": 1, "models": {"model_b": block}}))


def test_a_good_calibration_file_is_read(tmp_path):
    write_calibration(tmp_path / "c.json")
    assert C.read(tmp_path / "c.json", "model_b")["gender_temperature"] == 1.2


@pytest.mark.parametrize(
    "change",
    [
        {"gender_temperature": -1.0},
        {"gender_temperature": float("nan")},
        {"gender_temperature": "hot"},
        {"age_range": {"edges": [0.0], "low": [float("nan")], "high": [5.0]}},
        {"age_range": {"edges": [0.0, 10.0], "low": [-5.0], "high": [5.0]}},
        {"age_range": {"edges": [0.0], "low": [5.0], "high": [-5.0]}},
    ],
)
def test_a_bad_calibration_file_stops_in_one_line(tmp_path, change):
    write_calibration(tmp_path / "c.json", **change)
    with pytest.raises(UserError, match="c.json") as error:
        C.read(tmp_path / "c.json", "model_b")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text", ["", "{", "[]", '{"version": 1, "models": {}}'])
def test_a_missing_or_broken_calibration_file_stops_in_one_line(tmp_path, text):
    path = tmp_path / "c.json"
    if text:
        path.write_text(text)
    with pytest.raises(UserError, match="c.json"):
        C.read(path, "model_b")


ENSEMBLE = {"age": {"model_a": 0.2, "model_b": 0.8}, "gender": {"model_a": 0.0, "model_b": 1.0}}


def test_ensemble_weights_are_read_by_name_not_position(tmp_path):
    swapped = {task: dict(reversed(list(w.items()))) for task, w in ENSEMBLE.items()}
    (tmp_path / "e.json").write_text(json.dumps(swapped))
    assert read_weights(tmp_path / "e.json", ["model_a", "model_b"]) == ENSEMBLE


@pytest.mark.parametrize(
    "weights",
    [
        {"age": {"model_a": 5, "model_b": 5}, "gender": ENSEMBLE["gender"]},
        {"age": {"model_a": float("nan"), "model_b": 1}, "gender": ENSEMBLE["gender"]},
        {"age": {"model_a": -1, "model_b": 2}, "gender": ENSEMBLE["gender"]},
        {"age": {"model_a": 0.5, "model_b": 0.5, "model_c": 0}, "gender": ENSEMBLE["gender"]},
        {"age": {"model_b": 1.0}, "gender": ENSEMBLE["gender"]},
        {"age": {"model_a": "0.2", "model_b": "0.8"}, "gender": ENSEMBLE["gender"]},
        {"age": ENSEMBLE["age"]},
        [0.2, 0.8],
    ],
)
def test_a_tampered_ensemble_file_stops_in_one_line(tmp_path, weights):
    (tmp_path / "e.json").write_text(json.dumps(weights))
    with pytest.raises(UserError, match="e.json") as error:
        read_weights(tmp_path / "e.json", ["model_a", "model_b"])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text", ["", "{bad", "null"])
def test_an_unreadable_ensemble_file_stops_in_one_line(tmp_path, text):
    (tmp_path / "e.json").write_text(text)
    with pytest.raises(UserError, match="e.json"):
        read_weights(tmp_path / "e.json", ["model_a", "model_b"])
