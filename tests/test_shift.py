"""Other people's faces, without a model: labelled folders, the scores of a shift, the age
correction and the calibration files agegender-calibrate writes."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from agegender.errors import UserError
from agegender.evaluate import calibration as C
from agegender.shift import fit, labelled
from agegender.shift.labelled import Faces
from agegender.shift.scores import group_scores, score
from tests.synthetic import draw_face, jpeg


def write_folder(folder, rows: list[tuple[str, str, str]], header="file,age,gender") -> None:
    rng = np.random.default_rng(0)
    for name, _, _ in rows:
        if name and not (folder / name).exists():
            (folder / name).write_bytes(jpeg(draw_face(30, 0, rng)))
    with (folder / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header.split(","))
        writer.writerows(rows)


def test_labels_csv_reads_years_groups_and_blanks(tmp_path):
    write_folder(
        tmp_path,
        [("a.jpg", "31", "female"), ("b.jpg", "25-32", "Male"), ("c.jpg", "(38, 43)", ""),
         ("d.jpg", "60+", "male"), ("e.jpg", "", "female"), ("f.jpg", "4.5", "male")],
    )  # fmt: skip
    faces = labelled.read_folder(tmp_path)
    assert faces.source == "labels.csv" and len(faces) == 6
    assert faces.age[0] == 31 and faces.low[0] == faces.high[0] == 31
    assert math.isnan(faces.age[1]) and (faces.low[1], faces.high[1]) == (25, 32)
    assert (faces.low[2], faces.high[2]) == (38, 43)
    assert (faces.low[3], faces.high[3]) == (60, 120)
    assert math.isnan(faces.low[4]) and faces.age[5] == 4.5
    assert faces.gender.tolist() == [1, 0, -1, 0, 1, 0]


@pytest.mark.parametrize(
    "row, words",
    [
        (("missing.jpg", "30", "male"), "missing.jpg: no such file"),
        (("a.jpg", "thirty", "male"), "neither a number nor a group"),
        (("a.jpg", "130", "male"), "over 120"),
        (("a.jpg", "40-30", "male"), "low <= high"),
        (("a.jpg", "30", "m"), "not male or female"),
        (("a.jpg", "30", "other"), "not male or female"),
        (("", "30", "male"), "no file name"),
    ],
)
def test_a_bad_label_row_stops_in_one_line_naming_it(tmp_path, row, words):
    write_folder(tmp_path, [("ok.jpg", "20", "female")])
    (tmp_path / "a.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes())
    with (tmp_path / "labels.csv").open("a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow(row)
    with pytest.raises(UserError, match=words) as error:
        labelled.read_folder(tmp_path)
    assert "labels.csv:3" in str(error.value) and "\n" not in str(error.value)


def test_labels_csv_without_its_columns_is_refused(tmp_path):
    write_folder(tmp_path, [("a.jpg", "20", "female")], header="name,years,sex")
    with pytest.raises(UserError, match="file,age,gender"):
        labelled.read_folder(tmp_path)


def test_utkface_names_give_labels_and_odd_names_are_left_out(tmp_path, capsys):
    data = jpeg(draw_face(30, 0, np.random.default_rng(0)))
    for name in ["31_1_2_20170116174525125.jpg.chip.jpg", "8_0_0_x.jpg", "holiday.jpg"]:
        (tmp_path / name).write_bytes(data)
    faces = labelled.read_folder(tmp_path)
    assert faces.source == "file names"
    assert sorted(zip(faces.age.tolist(), faces.gender.tolist(), strict=True)) == [
        (8.0, 0),
        (31.0, 1),
    ]
    assert "1 file names" in capsys.readouterr().out
    with pytest.raises(UserError, match="not a folder"):
        labelled.read_folder(tmp_path / "holiday.jpg")


def test_a_folder_without_labels_says_what_it_needs(tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="labels.csv"):
        labelled.read_folder(tmp_path)


def faces_of(age, gender=None, low=None, high=None) -> Faces:
    age = np.asarray(age, "float64")
    n = len(age)
    return Faces(
        [f"{i}.jpg" for i in range(n)],
        age,
        age.copy() if low is None else np.asarray(low, "float64"),
        age.copy() if high is None else np.asarray(high, "float64"),
        np.zeros(n, "int64") if gender is None else np.asarray(gender),
        "test",
    )


BLOCK = {
    "age_range": {"method": "constant", "edges": [0.0], "low": [-3.0], "high": [3.0]},
    "gender_temperature": 2.0,
}


def test_shift_scores_by_hand():
    faces = faces_of([10, 20, 30, 40], gender=[0, 1, 1, -1])
    pred = np.array([[12, 0.2], [15, 0.9], [np.nan, np.nan], [45, 0.4]])
    s = score(faces, pred, BLOCK)
    assert (s["faces"], s["scored"]) == (4, 3)
    # errors +2, -5, +5 (the third face has no prediction)
    assert s["age"]["age_mae"] == 4.0 and s["age"]["mean_signed_error"] == pytest.approx(
        0.667, 1e-3
    )
    assert s["age"]["age_within_5"] == 1.0
    assert s["age"]["coverage"] == pytest.approx(1 / 3, abs=1e-4)  # only +-3 around 12 holds 10
    assert s["age"]["mean_width"] == 6.0
    assert list(s["buckets"]) == ["10-19", "20-29", "40-49"]
    assert s["gender"]["n"] == 2 and s["gender"]["gender_accuracy"] == 1.0
    assert s["gender"]["ece"] != s["gender"]["ece_raw"]  # the temperature was applied


def test_age_groups_nearest_group_and_one_off():
    nan = float("nan")
    faces = faces_of([nan] * 4, low=[0, 25, 25, 60], high=[2, 32, 32, 100])
    # groups 0-2, 25-32, 60-100: 1.0 is in 0-2; 40 is nearest 25-32; 10 nearest 0-2 (one
    # off from 25-32); 55 nearest 60-100
    result = group_scores(faces, np.array([1.0, 40.0, 10.0, 55.0]))
    assert result["groups"] == ["0-2", "25-32", "60-100"]
    assert result["group_accuracy"] == 0.75 and result["one_group_off"] == 1.0


def test_age_map_is_monotone_and_shifts_beyond_its_knots():
    knots = {"x": [20.0, 60.0], "y": [22.0, 70.0]}
    out = C.map_age(np.array([10.0, 20.0, 40.0, 60.0, 80.0]), knots)
    assert out.tolist() == [12.0, 22.0, 46.0, 70.0, 90.0]
    assert np.all(np.diff(C.map_age(np.linspace(0, 120, 500), knots)) > 0)
    assert C.map_age(np.array([5.0]), None).tolist() == [5.0]


def test_a_population_made_too_old_gets_a_correction_that_lowers_its_mae():
    rng = np.random.default_rng(0)
    age = rng.uniform(2, 80, 600)
    predicted = 0.8 * age + 2 + rng.normal(0, 3, 600)  # too young from 10 up
    block = fit.fit_block(
        np.stack([predicted, rng.uniform(0, 1, 600)], 1), age, -np.ones(600, int), 0.8, 0
    )
    assert block["age_map_choice"]["kind"] != "none"
    corrected = C.map_age(predicted, block["age_map"])
    assert np.mean(np.abs(corrected - age)) < np.mean(np.abs(predicted - age)) - 2
    assert block["gender_temperature"] == 1.0  # no gender labels: nothing to fit


def test_the_correction_kept_is_the_one_with_the_lowest_cross_validated_mae():
    rng = np.random.default_rng(1)
    age = rng.uniform(2, 80, 600)
    kind, knots, _, cv = fit.choose_age_map(age + rng.normal(0, 4, 600), age, 0)
    assert cv[kind] == min(cv.values()) and (kind == "none") == (knots is None)
    kind, knots, out_of_fold, cv = fit.choose_age_map(age.copy(), age, 0)  # exact already
    assert kind == "none" and knots is None and cv["none"] == 0.0
    assert out_of_fold.tolist() == age.tolist()


def write_user(path, **changes) -> None:
    block = json.loads(json.dumps(BLOCK))
    block.update(changes)
    data = {"version": 1, "level": 0.8, "model": "B", "models": {C.USER: block}}
    path.write_text(json.dumps(data))


def test_a_user_calibration_file_is_read_with_its_age_map(tmp_path):
    write_user(tmp_path / "mine.json", age_map={"x": [10.0, 50.0], "y": [12.0, 58.0]})
    block = C.read(tmp_path / "mine.json", C.USER)
    fitted = C.apply(block, np.array([30.0]), np.array([0.9]))
    assert fitted["age"][0] == 35.0 and (fitted["age_low"][0], fitted["age_high"][0]) == (32, 38)
    assert C.fitted_for(tmp_path / "mine.json") == "B"


@pytest.mark.parametrize(
    "change",
    [
        {"gender_temperature": 1e20},  # every face "female" at 0.5
        {"gender_temperature": 0.001},
        {"age_range": {"edges": [0.0], "low": [-5.0], "high": [1e308]}},
        {"age_range": {"edges": [0.0], "low": [20.0], "high": [40.0]}},  # beside the answer
        {"age_range": {"edges": [10.0, 20.0], "low": [-5.0, -5.0], "high": [5.0, 5.0]}},
        {"age_range": {"edges": [0.0, 0.0], "low": [-5.0, -5.0], "high": [5.0, 5.0]}},
        {"age_map": {"x": [10.0, 50.0], "y": [58.0, 12.0]}},  # decreasing
        {"age_map": {"x": [50.0, 10.0], "y": [12.0, 58.0]}},
        {"age_map": {"x": [10.0], "y": [12.0]}},
        {"age_map": {"x": [10.0, 50.0], "y": [12.0, 1e9]}},
        {"gender_temperature": 10**400},  # a huge integer
    ],
)
def test_a_tampered_calibration_stops_in_one_line(tmp_path, change):
    write_user(tmp_path / "mine.json", **change)
    with pytest.raises(UserError, match="mine.json") as error:
        C.read(tmp_path / "mine.json", C.USER)
    assert "\n" not in str(error.value)


def test_deeply_nested_calibration_json_stops_in_one_line(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="deep.json"):
        C.read(tmp_path / "deep.json", C.USER)
    with pytest.raises(UserError, match="deep.json"):
        C.fitted_for(tmp_path / "deep.json")


def test_fitted_ranges_always_hold_the_prediction():
    """A bucket where every residual is positive (a biased population) still gets a range
    around the answer: widened, never beside it."""
    predicted = np.linspace(20, 60, 400)
    ranges = C.fit_ranges(
        predicted, predicted + 5 + np.linspace(0, 3, 400), 0.8, "per_bucket_asymmetric"
    )
    assert all(lo <= 0 <= hi for lo, hi in zip(ranges["low"], ranges["high"], strict=True))


def test_age_range_is_clipped_to_zero_and_the_oldest_age():
    ranges = {"edges": [0.0], "low": [-10.0], "high": [10.0]}
    low, high = C.age_range(np.array([1.0, 115.0]), ranges)
    assert low.tolist() == [0.0, 105.0] and high.tolist() == [11.0, 120.0]


@pytest.mark.parametrize("entry", ["evaluate_main", "calibrate_main"])
def test_help_answers_without_importing_numpy_or_tensorflow(entry):
    code = (
        "import sys\n"
        f"from agegender.shift.cli import {entry}\n"
        "try:\n"
        f"    {entry}(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.splitlines()[-1] == "[]" and "labels.csv" in result.stdout


def test_averaged_heads_answer_the_mean_of_their_heads_in_one_file(tmp_path):
    """--adapt keeps several heads trained with other seeds; the model it writes averages
    their answers, still takes raw pixels and still has its `features` layer."""
    import keras

    from agegender.evaluate.inference import load_model
    from agegender.files import save_model
    from agegender.models.model_b import split_at_features
    from agegender.shift.adapt import averaged_heads

    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Dense(4, name="features")(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(
        inputs,
        {"age": keras.layers.Dense(1, name="age")(features),
         "gender": keras.layers.Dense(1, activation="sigmoid", name="gender")(features)},
    )  # fmt: skip
    _, head = split_at_features(model)
    first = head.get_weights()
    second = [w + 0.5 for w in first]
    x = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    answers = []
    for weights in (first, second):
        head.set_weights(weights)
        answers.append(model.predict(x, verbose=0))
    bagged = averaged_heads(model, head, [first, second])
    save_model(bagged, tmp_path / "bag.keras")
    loaded = load_model(str(tmp_path / "bag.keras"))
    got = loaded.predict(x, verbose=0)
    for name in ("age", "gender"):
        mean = (np.asarray(answers[0][name]) + np.asarray(answers[1][name])) / 2
        np.testing.assert_allclose(np.asarray(got[name]), mean, rtol=1e-5, atol=1e-6)
    assert loaded.get_layer("features") is not None
