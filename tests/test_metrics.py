import json

import numpy as np
import pandas as pd
import pytest

from agegender.data import Split
from agegender.evaluate.ensemble import combine, ensemble_weights
from agegender.evaluate.metrics import METRIC_KEYS, breakdown, scores


def test_scores_match_hand_computed_values():
    age = [10, 20, 30, 40]
    age_pred = [12, 20, 36, 40]  # errors 2, 0, 6, 0
    gender = [0, 1, 1, 0]
    prob = [0.2, 0.9, 0.4, 0.6]  # predictions 0, 1, 0, 1: two right
    m = scores(np.array(age), np.array(age_pred), np.array(gender), np.array(prob))
    assert list(m) == list(METRIC_KEYS)
    assert m["age_mae"] == 2.0
    assert m["age_rmse"] == pytest.approx(np.sqrt((4 + 36) / 4), abs=1e-3)
    assert m["age_within_5"] == 0.75
    assert m["gender_accuracy"] == 0.5
    assert m["gender_f1"] == 0.5  # precision 1/2, recall 1/2
    assert m["gender_auc"] == 0.75  # pairs (pos, neg): (0.9>0.2, 0.9>0.6, 0.4>0.2, 0.4<0.6)
    assert m["n"] == 4


def test_scores_of_an_empty_split_and_one_class():
    empty = scores(np.array([]), np.array([]), np.array([]), np.array([]))
    assert empty["n"] == 0 and empty["age_mae"] is None
    one_class = scores(np.array([30]), np.array([31]), np.array([1]), np.array([0.7]))
    assert one_class["gender_auc"] is None and one_class["gender_accuracy"] == 1.0


def test_breakdown_groups():
    split = Split(
        images=np.zeros((4, 1, 1, 3), np.uint8),
        age=np.array([5, 8, 25, 75]),
        gender=np.array([0, 1, 1, 0]),
        race=np.array([0, 1, -1, 0]),
        name=np.array(["a", "b", "c", "d"]),
    )
    pred = np.array([[7, 0.1], [8, 0.2], [20, 0.9], [60, 0.4]], float)
    table = breakdown(split, pred).set_index(["kind", "group"])
    assert table.loc[("bucket", "0-9"), "age_mae"] == 1.0
    assert table.loc[("bucket", "0-9"), "gender_accuracy"] == 0.5
    assert table.loc[("bucket", "70+"), "age_mae"] == 15.0
    assert table.loc[("race", "Unknown"), "n"] == 1
    assert table.loc[("gender", "female"), "gender_accuracy"] == 0.5


def test_ensemble_weighs_both_models_as_chosen_on_val(small_pipeline):
    faces = pd.read_csv(small_pipeline / "reports" / "eval" / "predictions.csv")
    weights = json.loads((small_pipeline / "reports" / "eval" / "ensemble.json").read_text())
    for task, column in (("age", "age"), ("gender", "gender_prob")):
        w = weights[task]
        assert set(w) == {"model_a", "model_b"} and sum(w.values()) == pytest.approx(1)
        mix = w["model_a"] * faces[f"{column}_model_a"] + w["model_b"] * faces[f"{column}_model_b"]
        np.testing.assert_allclose(faces[f"{column}_ensemble"], mix, atol=0.011)
    full = json.loads((small_pipeline / "reports" / "eval" / "scores_flip.json").read_text())
    for model in ("model_a", "model_b", "ensemble"):
        assert set(full[model]) == {"train", "val", "test"}
        assert set(full[model]["val"]) == set(METRIC_KEYS)


def test_metrics_json_holds_only_what_runs_are_compared_by(small_pipeline):
    """12 values under short names, so `dvc exp show` fits a 200-column terminal (its metric
    columns: about 140 characters); they equal the full scores."""
    metrics = json.loads((small_pipeline / "reports" / "metrics.json").read_text())
    full = json.loads((small_pipeline / "reports" / "eval" / "scores_flip.json").read_text())
    assert list(metrics) == ["A", "B", "AB"]
    headers = [f"{model}.{key}" for model, row in metrics.items() for key in row]
    assert len(headers) == 12 and sum(len(h) + 2 for h in headers) <= 145
    for key, model in (("A", "model_a"), ("B", "model_b"), ("AB", "ensemble")):
        assert metrics[key]["val_acc"] == full[model]["val"]["gender_accuracy"]
        assert metrics[key]["test_mae"] == full[model]["test"]["age_mae"]


def test_ensemble_weights_follow_the_better_model_on_val():
    rng = np.random.default_rng(0)
    age, gender = rng.uniform(1, 90, 400), rng.integers(0, 2, 400)
    good = np.stack([age + rng.normal(0, 1, 400), np.where(gender, 0.9, 0.1)], axis=1)
    noisy = np.stack([age + rng.normal(0, 15, 400), rng.uniform(0, 1, 400)], axis=1)
    weights = ensemble_weights({"a": noisy, "b": good}, age, gender)
    assert weights["age"]["b"] >= 0.9 and weights["gender"]["b"] >= 0.9
    even = ensemble_weights({"a": good, "b": good.copy()}, age, gender)
    assert even == {"age": {"a": 0.5, "b": 0.5}, "gender": {"a": 0.5, "b": 0.5}}
    mixed = combine({"a": noisy, "b": good}, even)
    np.testing.assert_allclose(mixed, (noisy + good) / 2, rtol=1e-6)
