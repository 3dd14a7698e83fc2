"""Exact oracles for the numbers a user trusts: hand-computed ranks and buckets at their
edges, a model that is not mirror-symmetric, a paired bootstrap whose interval is known, an
interrupted save. Each test fails on a realistic one-line bug (named in its docstring)."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from agegender.evaluate import calibration as C
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
    low, high = C.age_range(np.array([1.0, 100.0]), ranges)
    assert low.tolist() == [0.0, 90.0] and high.tolist() == [4.0, C.MAX_AGE]


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
