"""Exact oracles for the numbers a user trusts: hand-computed ranks and buckets at their
edges, a model that is not mirror-symmetric, a paired bootstrap whose interval is known, an
interrupted save. Each test fails on a realistic one-line bug (named in its docstring)."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from agegender.data import Split
from agegender.errors import UserError
from agegender.evaluate import calibration as C
from agegender.evaluate import ensemble as E
from agegender.evaluate import metrics as M
from agegender.evaluate import trust
from agegender.evaluate.inference import predict
from agegender.evaluate.intervals import bootstrap
from agegender.files import save_model
from agegender.serve.predict import FIELDS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "n, level, rank",
    [(20, 0.8, 17), (4, 0.8, 4), (9, 0.8, 8), (1, 0.8, 1), (99, 0.9, 90), (100, 0.9, 91)],
)
def test_the_conformal_rank_is_ceil_of_n_plus_1_times_level(n, level, rank):
    """ceil((n + 1) * level), at most n: ceil(n * level) gives 16 of 20 (coverage 0.763
    instead of 0.813 on 20 faces)."""
    assert C.conformal_rank(n, level) == rank
    scores = np.arange(1, n + 1, dtype=float)[::-1]  # any order: the rank is of the sorted
    assert C.upper_quantile(scores, level) == rank


@pytest.mark.parametrize(
    "predicted, bucket",
    [(0.0, 0), (-0.4, 0), (9.999, 0), (10.0, 1), (19.5, 1), (20.0, 2), (130.0, 2)],
)
def test_a_prediction_on_a_bucket_edge_belongs_to_the_bucket_above(predicted, bucket):
    """side="right": a prediction of exactly 10 is in [10, 20); side="left" put exactly 0 in
    the last bucket (65 and over). Below the first edge: the first bucket, never the last."""
    assert C.bucket_of(np.array([predicted]), [0.0, 10.0, 20.0])[0] == bucket


def test_a_range_is_clipped_at_zero_and_at_the_oldest_age():
    """A predicted 1 year with a range of -1.15..+3 gives 0..4, never an age_low of -0.15."""
    ranges = {"edges": [0.0, 60.0], "low": [-1.15, -10.0], "high": [3.0, 80.0]}
    low, high = C.age_range(np.array([1.0, 100.0, -3.5]), ranges)
    assert low.tolist() == [0.0, 90.0, 0.0] and high.tolist() == [4.0, C.MAX_AGE, 0.0]


def _left_half_model() -> keras.Model:
    """age = the mean of the image's left half, P(female) = 0.2 everywhere: a model that
    answers differently for a face and its mirror image."""
    inputs = keras.Input((4, 4, 3))
    left = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :, :2, :], axis=(1, 2, 3)))(inputs)
    age = keras.layers.Reshape((1,), name="age")(left)
    gender = keras.layers.Lambda(lambda a: a * 0.0 + 0.2, name="gender")(age)
    return keras.Model(inputs, {"age": age, "gender": gender})


def test_flip_averaging_averages_a_face_with_its_mirror_image():
    """With the left half dark and the right half bright, the plain answer is the left mean
    and the flip-averaged one the mean of both halves; averaging the unflipped image twice
    gives the left mean again."""
    images = np.zeros((2, 4, 4, 3), "float32")
    images[:, :, 2:, :] = 100.0  # right half bright
    images[1, :, :2, :] = 20.0  # the second face: its left half grey
    out = predict(_left_half_model(), images, batch_size=1)
    np.testing.assert_allclose(out[False][:, 0], [0.0, 20.0])
    np.testing.assert_allclose(out[True][:, 0], [50.0, 60.0])
    np.testing.assert_allclose(out[True][:, 1], [0.2, 0.2])


def test_a_paired_bootstrap_of_a_constant_difference_has_that_difference_as_interval():
    """Model b is model a plus 1 on every face, whose own values spread from 0 to 50: the
    paired difference is 1 in every resample, so its interval is exactly [1, 1]. An unpaired
    bootstrap (separate resamples per model) gives about +-5."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 50, 200)
    values = {"a": {"age_mae": a}, "b": {"age_mae": a + 1.0}}
    out = bootstrap(values, [("a", "b")], resamples=500, seed=0)
    difference = out["differences"]["b - a"]["age_mae"]
    assert difference == {"value": 1.0, "low": 1.0, "high": 1.0}
    model = out["models"]["a"]["age_mae"]
    assert model["high"] - model["low"] > 3  # the model's own interval is wide


def test_an_interrupted_save_keeps_the_previous_model_file(tmp_path, monkeypatch):
    """save_model writes a temporary and renames it: Ctrl-C in the middle of writing leaves
    the old .keras byte for byte, and no partial file beside it."""
    path = tmp_path / "age_gender_A.keras"
    model = _left_half_model()
    save_model(model, path)
    before = hashlib.md5(path.read_bytes()).hexdigest()
    real = zipfile.ZipFile.writestr

    def interrupted(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "writestr", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, path)
    assert hashlib.md5(path.read_bytes()).hexdigest() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_the_csv_columns_come_in_the_order_the_readme_documents():
    """README: `Each record: {"path", "face", "box", "age", "age_low", "age_high", ...}`; the
    CSV's header is that order, then `error` (swapped age_low/age_high would pass any test
    that reads columns by name)."""
    readme = (ROOT / "README.md").read_text()
    record = re.search(r"Each record: `\{([^}]*)\}`", readme, re.S)
    assert record, "README no longer documents the record"
    documented = re.findall(r'"(\w+)"', record.group(1))
    assert [*documented, "error"] == FIELDS


def test_the_api_reads_each_models_own_calibration(small_pipeline, monkeypatch):
    """calibration_for("A") is model A's block of calibration.json, "B" model B's: with the
    keys swapped each model would answer with the other's range and temperature."""
    from agegender.layout import CALIBRATION
    from agegender.serve import api

    monkeypatch.setenv(api.HOME, str(small_pipeline))
    path = small_pipeline / CALIBRATION
    blocks = {key: C.read(path, key) for key in ("model_a", "model_b", "ensemble")}
    assert blocks["model_a"] != blocks["model_b"]
    for name, key in (("A", "model_a"), ("B", "model_b"), ("ensemble", "ensemble")):
        assert api.calibration_for(name) == blocks[key]


def test_per_face_scores_by_hand():
    """What every interval averages: right or wrong gender at 0.5, |age error|, within 5
    years inclusive (an error of pred + age once passed every test)."""
    from agegender.evaluate.intervals import per_face

    age = np.array([30.0, 40.0, 20.0, 50.0])
    gender = np.array([1, 1, 0, 0])
    pred = np.array([[33.0, 0.7], [38.0, 0.2], [25.0, 0.5], [44.9, 0.49]])
    scores = per_face(age, gender, pred)
    assert scores["gender_accuracy"].tolist() == [1.0, 0.0, 0.0, 1.0]
    np.testing.assert_allclose(scores["age_mae"], [3.0, 2.0, 5.0, 5.1])
    assert scores["age_within_5"].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_a_bootstrap_of_one_resample_has_that_resample_as_its_interval():
    """resamples=1: one draw, so every interval is one point; a loop that skipped a draw
    would have nothing to summarise."""
    values = {"a": {"age_mae": np.arange(10.0)}, "b": {"age_mae": np.arange(10.0) + 2}}
    out = bootstrap(values, [("a", "b")], resamples=1, seed=3)
    model = out["models"]["a"]["age_mae"]
    assert model["low"] == model["high"] and out["resamples"] == 1
    assert out["differences"]["b - a"]["age_mae"] == {"value": 2.0, "low": 2.0, "high": 2.0}


def test_every_face_can_be_drawn_by_the_bootstrap():
    """Two faces scoring 0 and 100, 200 resamples of two: some resample is face 0 twice and
    some face 1 twice, so the interval is [0, 100] (drawing from 1 to n leaves face 0 out)."""
    values = {"a": {"age_mae": np.array([0.0, 100.0])}}
    model = bootstrap(values, [], resamples=200, seed=0)["models"]["a"]["age_mae"]
    assert (model["low"], model["high"]) == (0.0, 100.0)


def test_the_interval_ends_are_the_2_5th_and_97_5th_percentiles():
    """Faces scoring 0, 100, 100: a resample is all face 0 (mean 0) with probability 1/27 =
    3.7 %, between 2.5 % and 5 %: the lower end is 0 at the 2.5th percentile and 33.3 at the
    5th. Symmetrically for 100, 0, 0 at the upper end."""
    low = {"a": {"age_mae": np.array([0.0, 100.0, 100.0])}}
    high = {"a": {"age_mae": np.array([100.0, 0.0, 0.0])}}
    assert bootstrap(low, [], resamples=4000, seed=0)["models"]["a"]["age_mae"]["low"] == 0.0
    assert bootstrap(high, [], resamples=4000, seed=0)["models"]["a"]["age_mae"]["high"] == 100.0


def test_the_bootstrap_is_the_seeded_resampling_a_reader_would_write_by_hand():
    """150 resamples (not a multiple of the 100 drawn at a time): the same 150 draws of the
    seeded generator a reader would make in one go, means, paired difference, 2.5th and
    97.5th percentiles, each rounded to 4 digits."""
    a, b = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0]), np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    got = bootstrap({"A": {"s": a}, "B": {"s": b}}, [("A", "B")], resamples=150, seed=7)
    idx = np.random.default_rng(7).integers(0, 6, size=(150, 6))

    def by_hand(point: float, draws: np.ndarray) -> dict:
        low, high = np.percentile(draws, [2.5, 97.5])
        return {"value": round(point, 4), "low": round(low, 4), "high": round(high, 4)}

    assert got["models"]["A"]["s"] == by_hand(a.mean(), a[idx].mean(axis=1))
    assert got["differences"]["B - A"]["s"] == by_hand(
        b.mean() - a.mean(), b[idx].mean(axis=1) - a[idx].mean(axis=1)
    )
    assert got["models"]["A"]["s"]["value"] == 0.6667


def _split(age: list[int], gender: list[int], race: list[int]) -> Split:
    n = len(age)
    return Split(
        images=np.zeros((n, 1, 1, 3), "uint8"),
        age=np.array(age),
        gender=np.array(gender),
        race=np.array(race),
        name=np.array([f"{i}.jpg" for i in range(n)]),
    )


def test_trust_measures_coverage_and_width_of_a_range_by_hand():
    """A range of -1..+4 around each prediction, by hand: 34 (predicted 30) and 13
    (predicted 14) sit on an edge of theirs and are held (`<=`, `>=`), 67 (predicted 70) is
    below its range, 0 is held by a range clipped at 0 (width 4, not 5). Groups come in
    the order of the buckets, whatever order the faces come in."""
    split = _split(age=[67, 34, 0, 13], gender=[0, 1, 0, 1], race=[0, 1, -1, 0])
    pred = np.array([[70.0, 0.3], [30.0, 0.6], [0.0, 0.1], [14.0, 0.8]])
    ranges = {"method": "constant", "edges": [0.0], "low": [-1.0], "high": [4.0]}
    fitted = {"level": 0.8, "models": {"A": {"age_range": ranges, "gender_temperature": 2.0}}}
    out = trust.measure({"A": pred}, split, fitted, resamples=10, seed=0)
    model = out["models"]["A"]
    assert (out["split_faces"], out["level"]) == (4, 0.8)
    assert (model["method"], model["gender_temperature"]) == ("constant", 2.0)
    assert model["coverage"] == 0.75 and model["mean_width"] == 4.75
    assert model["by"]["bucket"] == {
        "0-9": {"n": 1, "coverage": 1.0, "mean_width": 4.0},
        "10-19": {"n": 1, "coverage": 1.0, "mean_width": 5.0},
        "30-39": {"n": 1, "coverage": 1.0, "mean_width": 5.0},
        "60-69": {"n": 1, "coverage": 0.0, "mean_width": 5.0},
    }
    assert list(model["by"]["bucket"]) == ["0-9", "10-19", "30-39", "60-69"]
    assert model["by"]["race"] == {
        "White": {"n": 2, "coverage": 0.5, "mean_width": 5.0},
        "Black": {"n": 1, "coverage": 1.0, "mean_width": 5.0},
        "Unknown": {"n": 1, "coverage": 1.0, "mean_width": 4.0},
    }
    before, after = model["gender"]["before"], model["gender"]["after"]
    assert before["brier"] == 0.075  # (0.09 + 0.16 + 0.01 + 0.04) / 4, all right
    assert before["log_loss"] == round(-np.log([0.7, 0.6, 0.9, 0.8]).mean(), 4)
    scaled = C.scale(pred[:, 1], 2.0)  # logits halved: every probability nearer 0.5
    assert after["brier"] == round(float(((scaled - [0, 1, 0, 1]) ** 2).mean()), 4)
    assert after["brier"] > before["brier"]
    assert before["ece"] == round(C.ece(pred[:, 1], np.array([0.0, 1, 0, 1])), 4)
    assert sum(b["n"] for b in before["reliability"]) == 4


def test_trust_json_keeps_the_digits_it_promises():
    """Coverage 2 of 3 is 0.6667 (4 digits), mean width (3 + 4 + 4) / 3 is 3.67 (2 digits:
    the range at 1 year is clipped at 0), overall and per group; calibration scores 4."""
    split = _split(age=[1, 20, 30], gender=[0, 1, 1], race=[0, 0, 0])
    pred = np.array([[1.0, 0.3], [25.0, 0.6], [30.0, 0.9]])
    ranges = {"method": "constant", "edges": [0.0], "low": [-2.0], "high": [2.0]}
    fitted = {"level": 0.8, "models": {"A": {"age_range": ranges, "gender_temperature": 1.5}}}
    model = trust.measure({"A": pred}, split, fitted, resamples=10, seed=0)["models"]["A"]
    assert (model["coverage"], model["mean_width"]) == (0.6667, 3.67)
    assert model["by"]["race"]["White"] == {"n": 3, "coverage": 0.6667, "mean_width": 3.67}
    y = np.array([0.0, 1.0, 1.0])
    for name, p in (("before", pred[:, 1]), ("after", C.scale(pred[:, 1], 1.5))):
        got = model["gender"][name]
        assert got["ece"] == round(C.ece(p, y), 4) and got["brier"] == round(C.brier(p, y), 4)
        assert got["log_loss"] == round(C.log_loss(p, y), 4)
        assert len(str(got["log_loss"]).split(".")[1]) == 4  # a value with more digits


def test_trust_bootstraps_each_model_and_the_difference_second_minus_first():
    split = _split(age=[10, 20, 30, 40], gender=[0, 1, 0, 1], race=[0, 0, 0, 0])
    a = np.array([[12.0, 0.2], [20.0, 0.7], [33.0, 0.4], [40.0, 0.9]])  # MAE 1.25
    b = a + [[1.0, 0.0]]  # every age one year older: errors 3, 1, 4, 1
    ranges = {"method": "constant", "edges": [0.0], "low": [-1.0], "high": [1.0]}
    block = {"age_range": ranges, "gender_temperature": 1.0}
    fitted = {"level": 0.8, "models": {"A": block, "B": block}}
    intervals = trust.measure({"A": a, "B": b}, split, fitted, resamples=50, seed=0)["intervals"]
    assert (intervals["resamples"], intervals["faces"]) == (50, 4)
    assert intervals["models"]["A"]["age_mae"]["value"] == 1.25
    assert intervals["models"]["B"]["age_mae"]["value"] == 2.25
    assert list(intervals["differences"]) == ["B - A"]
    assert intervals["differences"]["B - A"]["age_mae"]["value"] == 1.0


def test_trust_fits_a_range_and_temperature_calibration_json_can_read(tmp_path):
    """fit on val: the age head's range (column 0) and the gender head's temperature
    (column 1), in a file the predictor's reader accepts."""
    rng = np.random.default_rng(0)
    age = rng.integers(1, 90, 200)
    gender = rng.integers(0, 2, 200)
    prob = np.clip(np.where(gender == 1, 0.9, 0.1) + rng.normal(0, 0.05, 200), 0.01, 0.99)
    pred = np.stack([age + rng.normal(0, 4, 200), prob], axis=1)
    val = _split(age=list(age), gender=list(gender), race=[0] * 200)
    fitted = trust.fit({"A": pred}, val, level=0.8, seed=3)
    assert (fitted["faces"], fitted["level"], fitted["fitted_on"]) == (200, 0.8, "val")
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(fitted))
    block = C.read(path, "A")
    ages = pred[:, 0].astype("float64")
    assert block["age_range"] == json.loads(json.dumps(C.choose_ranges(ages, age, 0.8, 3)))
    assert block["gender_temperature"] == C.fit_temperature(pred[:, 1], gender)
    assert block["gender_temperature"] == round(block["gender_temperature"], 4)  # as printed
    low, high = C.age_range(ages, block["age_range"])
    assert 0.74 <= ((age >= low) & (age <= high)).mean() <= 0.9


def test_sparse_buckets_of_predicted_age_merge_into_the_one_below():
    """40 predictions per bucket keep every edge; 39 in 25-35 merge it into 15-25; 39 in
    the first merge it into the one above; 10 in all leave one bucket."""
    centres = [3.0, 10.0, 20.0, 30.0, 40.0, 55.0, 70.0]

    def edges(counts: list[int]) -> list[float]:
        return C.bucket_edges(np.repeat(centres, counts))

    assert edges([40] * 7) == [0.0, 6.0, 15.0, 25.0, 35.0, 50.0, 65.0]
    assert edges([40, 40, 40, 39, 40, 40, 40]) == [0.0, 6.0, 15.0, 35.0, 50.0, 65.0]
    assert edges([39, 40, 40, 40, 40, 40, 40]) == [0.0, 15.0, 25.0, 35.0, 50.0, 65.0]
    assert edges([10, 0, 0, 0, 0, 0, 0]) == [0.0]


def test_ranges_per_bucket_by_hand():
    """Residuals +2..+5 below 20 (a model that makes the young too young) and -0.5..-3
    above (the old too old); 4 faces a bucket, level 0.8: rank min(4, ceil(5 x 0.8)) = 4.
    Symmetric: +-5 and +-3. Asymmetric (tails at 0.9, rank 4): 0..+5 and -3..0, each
    widened to hold the prediction (the fitted bounds were +2..+5 and -3..-0.5)."""
    predicted = np.array([10.0] * 4 + [30.0] * 4)
    age = predicted + [2, 3, 4, 5, -1, -2, -3, -0.5]
    symmetric = C.fit_ranges(predicted, age, 0.8, "per_bucket", [0.0, 20.0])
    assert symmetric == {"edges": [0.0, 20.0], "low": [-5.0, -3.0], "high": [5.0, 3.0]}
    asymmetric = C.fit_ranges(predicted, age, 0.8, "per_bucket_asymmetric", [0.0, 20.0])
    assert asymmetric == {"edges": [0.0, 20.0], "low": [0.0, -3.0], "high": [5.0, 0.0]}
    constant = C.fit_ranges(predicted, age, 0.8, "constant")  # 8 faces: rank 8 of |r|
    assert constant == {"edges": [0.0], "low": [-5.0], "high": [5.0]}


def test_a_certain_probability_keeps_a_finite_logit_and_log_loss():
    """P = 1 and 0 are clipped to 1e-6 from the ends: the log loss of a sure, wrong answer
    is -log(1e-6) = 13.8, not infinity; temperature 2 takes the square root of the odds."""
    assert C.log_loss(np.array([1.0, 0.0]), np.array([0, 1])) == pytest.approx(-np.log(1e-6))
    root = np.sqrt(1e-6) / (np.sqrt(1e-6) + np.sqrt(1 - 1e-6))
    assert C.scale(np.array([0.0, 1.0]), 2.0) == pytest.approx([root, 1 - root], rel=1e-9)


def test_a_temperature_fitted_at_its_bounds_is_one_the_reader_accepts(tmp_path):
    """Right but shy probabilities want T -> 0, sure but random ones T -> infinity: the fit
    stops at 0.05 and (about) 20, and calibration.json's reader accepts exactly those, a range
    whose low bound is 0, one 120 years wide, and a last bucket from 120."""
    y = np.array([1, 0] * 20)
    shy = C.fit_temperature(np.where(y == 1, 0.6, 0.4), y)
    sure = C.fit_temperature(np.array([0.99, 0.01, 0.01, 0.99] * 10), y)
    assert shy == 0.05 and sure == pytest.approx(20.0, abs=0.01)  # the search stops near it
    for temperature, low, high in ((0.05, 0.0, 5.0), (20.0, -120.0, 0.0)):
        block = {"age_range": {"edges": [0.0, 120.0], "low": [low] * 2, "high": [high] * 2},
                 "gender_temperature": temperature}  # fmt: skip
        path = tmp_path / "calibration.json"
        path.write_text(json.dumps({"version": 1, "models": {"A": block}}))
        assert C.read(path, "A") == block


def test_a_calibration_file_names_its_model_by_name_absolute_or_relative_path(tmp_path):
    path = tmp_path / "mine" / "calibration.json"
    path.parent.mkdir()
    for model, meant in (("B", "B"), ("/models/x.keras", "/models/x.keras"),
                         ("x.keras", str(tmp_path / "mine" / "x.keras"))):  # fmt: skip
        path.write_text(json.dumps({"model": model}))
        assert C.fitted_for(path) == meant
    for model in (5, ""):
        path.write_text(json.dumps({"model": model}))
        with pytest.raises(UserError, match="`model` must name the model it was fitted for"):
            C.fitted_for(path)


def test_expected_calibration_error_by_hand():
    """Fifteen bins of confidence: 0.9 and 0.92 share bin 12 (one right, one wrong), 0.5 and
    0.52 bin 0 (both right: P = 0.5 says female), 0.95 is alone in bin 13 and a wrong 1.0
    in the last bin, not past it: each bin's share of faces times its gap,
    (2 |0.5 - 0.91| + 2 |1 - 0.51| + |1 - 0.95| + |0 - 1|) / 6 = 0.475 (16 bins: 0.508;
    1.0 in 0.95's bin: 0.458; 1.0 dropped: 0.308)."""
    p = np.array([0.9, 0.08, 0.5, 0.52, 1.0, 0.95])
    assert C.ece(p, np.array([1, 1, 1, 1, 0, 1])) == pytest.approx(0.475)


def test_a_method_holds_at_its_bounds_exactly():
    """Coverage 2 points under the level and a worst bucket 6 under it still hold, at 0.8
    and at 0.9 (where 0.9 - 0.06 is not 0.84 in floats); a hair less does not."""
    for level, overall, worst in ((0.8, 0.78, 0.74), (0.9, 0.88, 0.84)):
        assert C.holds({"cv_coverage": overall, "cv_worst_bucket_coverage": worst}, level)
        assert not C.holds({"cv_coverage": overall - 1e-4, "cv_worst_bucket_coverage": 1}, level)
        assert not C.holds({"cv_coverage": 1, "cv_worst_bucket_coverage": worst - 1e-4}, level)


def test_reliability_bins_by_hand():
    """Ten bins of P(female): 0.15 and 0.18 share bin 1, 0.95 and 1.0 the last."""
    p, y = np.array([0.05, 0.15, 0.18, 1.0, 0.95]), np.array([0, 1, 0, 1, 1])
    rows = C.reliability(p, y)
    assert [(r["bin"], r["n"], r["observed"]) for r in rows] == [
        (0, 1, 0.0),
        (1, 2, 0.5),
        (9, 2, 1.0),
    ]
    assert [r["predicted"] for r in rows] == pytest.approx([0.05, 0.165, 0.975])


def test_the_chosen_range_reports_each_methods_two_fold_cross_validation():
    """Recomputed face by face: a face held out by the fold it is not in (the seed's
    permutation, alternate faces), its range from the other half. Children err by a year,
    adults by six: one constant +- is too wide for children and too narrow for adults (their
    bucket's coverage fails), so ranges per bucket are chosen."""
    rng = np.random.default_rng(1)
    n = 81  # coverages in 81sts and whole years: rounding and ties at the range's ends show
    predicted = np.round(np.repeat([10.0, 40.0], [41, 40]) + rng.normal(0, 1, n))
    age = np.round(predicted + rng.normal(0, 1, n) * np.repeat([1.0, 6.0], [41, 40]))
    chosen = C.choose_ranges(predicted, age, 0.8, seed=5)
    order = np.random.default_rng(5).permutation(n)
    fold = np.empty(n, int)
    fold[order] = np.arange(n) % 2  # the 1st, 3rd, ... of the permutation: fold 0
    edges = C.bucket_edges(predicted)
    bucket = C.bucket_of(predicted, edges)
    for method, figures in chosen["tried"].items():
        held_in, widths = [], []
        for face in range(n):
            others = fold != fold[face]
            ranges = C.fit_ranges(predicted[others], age[others], 0.8, method, edges)
            low, high = C.age_range(predicted[face : face + 1], ranges)
            held_in.append(low[0] <= age[face] <= high[0])
            widths.append(high[0] - low[0])
        held_in = np.array(held_in)
        worst = min(held_in[bucket == b].mean() for b in set(bucket))
        assert figures == {
            "cv_coverage": round(held_in.mean(), 4),
            "cv_worst_bucket_coverage": round(worst, 4),
            "cv_mean_width": round(np.mean(widths), 3),
        }, method
    assert chosen["tried"]["constant"]["cv_worst_bucket_coverage"] < 0.8 - C.BUCKET_SLACK
    assert chosen["method"] != "constant"
    assert {k: chosen[k] for k in ("edges", "low", "high")} == C.fit_ranges(
        predicted, age, 0.8, chosen["method"], edges
    )


def test_ensemble_weights_by_hand():
    """Ages: A says 13 years too old, B 7 too young, so 0.35 A + 0.65 B is exact on every
    face (a grid of 0.05 reaches it, one of 0.1 does not). Gender: A is sure and right (P
    of exactly 0 and 1: clipped, not log 0), B says 0.5: all weight on A. Two identical
    models: an even split (ties go to the most even weights)."""
    age = np.array([20.0, 35.0, 50.0, 8.0])
    gender = np.array([1, 0, 1, 0])
    a = np.stack([age + 13, gender.astype(float)], axis=1)
    b = np.stack([age - 7, np.full(4, 0.5)], axis=1)
    weights = E.ensemble_weights({"A": a, "B": b}, age, gender)
    assert weights == {"age": {"A": 0.35, "B": 0.65}, "gender": {"A": 1.0, "B": 0.0}}
    # A is surer of the woman (0.9 against 0.6) but wrongly leans female on the man (0.6
    # against 0.1): the log loss's optimum lies past B (w_A = -0.1), so B alone
    mixed = E.ensemble_weights(
        {"A": np.array([[30, 0.9], [40, 0.6]]), "B": np.array([[30, 0.6], [40, 0.1]])},
        np.array([30.0, 40.0]),
        np.array([1, 0]),
    )
    assert mixed["gender"] == {"A": 0.0, "B": 1.0}
    same = E.ensemble_weights({"A": b, "B": b.copy()}, age, gender)
    assert same == {"age": {"A": 0.5, "B": 0.5}, "gender": {"A": 0.5, "B": 0.5}}
    combined = E.combine({"A": a, "B": b}, weights)
    assert combined[:, 0] == pytest.approx(age) and combined[:, 1] == pytest.approx(gender)
    quarter = E.combine(
        {"A": a, "B": b}, {"age": {"A": 0.25, "B": 0.75}, "gender": weights["gender"]}
    )
    assert quarter[:, 0] == pytest.approx(age + 0.25 * 13 - 0.75 * 7)


def test_read_weights_refuses_a_weight_above_1_and_a_sum_off_1_by_name(tmp_path):
    path = tmp_path / "ensemble.json"
    path.write_text(json.dumps({t: {"A": 1.5, "B": -0.5} for t in E.TASKS}))
    with pytest.raises(UserError, match=r"age\.A = 1\.5: a weight is a number in \[0, 1\]"):
        E.read_weights(path, ["A", "B"])
    path.write_text(json.dumps({t: {"A": 0.5, "B": 0.5015} for t in E.TASKS}))
    with pytest.raises(UserError, match=r"age: the weights sum to 1.0015, not 1"):
        E.read_weights(path, ["A", "B"])
    path.write_text(json.dumps({t: {"A": 0.5, "B": 0.5005} for t in E.TASKS}))
    assert E.read_weights(path, ["A", "B"])["age"] == {"A": 0.5, "B": 0.5005}  # rounding


def test_scores_by_hand():
    """Gender: 4 of 6 right at 0.5 (P = 0.5 says female), F1 2/3, AUC 6 of 9 pairs. Age:
    errors 1, 2, 5, 7, 0, 1: MAE 16/6, RMSE sqrt(80/6), 5 of 6 within 5 years (5 is
    within). Every score keeps the digits metrics.json promises (4, or 3 for years)."""
    gender = np.array([1, 1, 1, 0, 0, 0])
    prob = np.array([0.9, 0.5, 0.2, 0.6, 0.1, 0.3])
    age = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    pred = age + [1, -2, 5, -7, 0, 1]
    assert M.scores(age, pred, gender, prob) == {
        "gender_accuracy": 0.6667,
        "gender_f1": 0.6667,
        "gender_auc": 0.6667,
        "age_mae": 2.667,
        "age_rmse": 3.651,
        "age_within_5": 0.8333,
        "n": 6,
    }
    men = M.scores(age, pred, np.zeros(6, int), np.full(6, 0.1))  # one class: no AUC, no F1
    assert (men["gender_accuracy"], men["gender_f1"], men["gender_auc"]) == (1.0, 0.0, None)
    assert M.scores(age[:0], pred[:0], gender[:0], prob[:0]) == dict.fromkeys(
        M.METRIC_KEYS[:-1]
    ) | {"n": 0}
    assert set(M.METRIC_KEYS) == set(M.scores(age, pred, gender, prob))


def test_breakdown_by_hand():
    """Per group, in the order of the buckets, races and genders: the under-10s err by 1,
    0, 1 (MAE 0.667) and get 2 of 3 genders right (P = 0.5 says female)."""
    split = _split(age=[25, 5, 7, 8], gender=[1, 1, 0, 0], race=[-1, 0, 0, 0])
    pred = np.array([[25.0, 0.9], [6.0, 0.5], [7.0, 0.2], [9.0, 0.7]])
    rows = M.breakdown(split, pred).to_dict("records")
    assert [(r["kind"], r["group"], r["n"], r["age_mae"], r["gender_accuracy"]) for r in rows] == [
        ("bucket", "0-9", 3, 0.667, 0.6667),
        ("bucket", "20-29", 1, 0.0, 1.0),
        ("gender", "male", 2, 0.5, 0.5),
        ("gender", "female", 2, 0.5, 1.0),
        ("race", "White", 3, 0.667, 0.6667),
        ("race", "Unknown", 1, 0.0, 1.0),
    ]


@pytest.mark.parametrize(
    "change, accepted",
    [
        ({"age_map": {"x": [0.0, 50.0, 120.0], "y": [0.0, 50.0, 50.0]}}, True),  # flat: fine
        ({"age_map": {"x": [0.0, 0.0], "y": [1.0, 2.0]}}, False),  # knots not ascending
        ({"age_map": {"x": [0.0, 10.0], "y": [5.0, 4.0]}}, False),  # ages decreasing
        ({"age_map": {"x": [0.0, 121.0], "y": [0.0, 100.0]}}, False),  # past MAX_AGE
        ({"age_map": {"x": [0.0, 10.0], "y": [-1.0, 100.0]}}, False),  # below 0
        ({"age_map": {"x": [10.0], "y": [10.0]}}, False),  # one knot
        ({"age_map": {"x": [0.0, float("nan")], "y": [0.0, 1.0]}}, "finite"),
        ({"age_range": {"edges": [0.0], "low": [-10.0], "high": [115.0]}}, False),  # 125 wide
        ({"age_range": {"edges": [0.0], "low": [-1.0], "high": [0.5]}}, True),
        ({"age_range": {"edges": [0.0, 121.0], "low": [-1.0] * 2, "high": [1.0] * 2}}, False),
    ],
)
def test_the_calibration_reader_at_its_edges(tmp_path, change, accepted):
    """What agegender-calibrate may write and the predictor applies: an age map of
    ascending knots and non-decreasing ages in 0-120, ranges at most 120 years wide that
    hold the prediction, finite numbers. Anything else is one line, never applied."""
    block = {"age_range": {"edges": [0.0], "low": [-2.0], "high": [2.0]},
             "gender_temperature": 1.0} | change  # fmt: skip
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"version": 1, "models": {"user": block}}))
    if accepted is True:
        assert C.read(path, "user") == block
    else:
        said = "every number must be finite" if accepted == "finite" else "needs"
        with pytest.raises(UserError, match=f"calibration.json: user: {said}"):
            C.read(path, "user")
