"""The report's comparative sentences and tables, each compared whole with the text a
reader should see for scores chosen by hand (fast: no pipeline, no figures)."""

from __future__ import annotations

import pandas as pd

from agegender.report import comparison as R
from agegender.report import text as T


def block(accuracy: float | None, mae: float | None, n: int = 1000) -> dict:
    return {"test": {"gender_accuracy": accuracy, "age_mae": mae, "n": n}}


def test_the_scope_says_which_split_and_how_many_faces():
    metrics = {"model_a": {"test": {"n": 1234}, "val": {"n": 987}}}
    assert R.scope_sentence(metrics, "test") == (
        "All scores in this section are on the test split (1,234 faces), which no model "
        "trained or early-stopped on."
    )
    assert R.scope_sentence(metrics, "val").startswith(
        "All scores in this section are on the val split (987 faces): there is no test split"
    )


def test_the_ensemble_sentence_by_hand():
    """B is better than A at both: the ensemble lowers B's MAE by 0.100 years and raises its
    accuracy by 0.50 points; no bootstrap intervals were given."""
    metrics = {"model_a": block(0.90, 6.0), "model_b": block(0.94, 4.5),
               "ensemble": block(0.945, 4.4)}  # fmt: skip
    assert R.ensemble_sentence(metrics, "test") == (
        "Averaging the two models' outputs (the ensemble) lowers the age MAE by 0.100 years "
        "relative to the better single model (no interval), and raises gender accuracy by "
        "0.50 points relative to the more accurate one (no interval)."
    )
    metrics["ensemble"] = block(0.94, 4.5)
    assert "leaves the age MAE unchanged relative" in R.ensemble_sentence(metrics, "test")
    assert "leaves gender accuracy unchanged relative" in R.ensemble_sentence(metrics, "test")


def test_the_cost_sentence_by_hand():
    trains = {"model_a": {"parameters": 1000, "epochs": 1},
              "model_b": {"parameters": 2500, "epochs": 3}}  # fmt: skip
    assert R.cost_sentence(trains) == (
        "Cost: model B has 2,500 parameters, 2.5 times model A's 1,000, and trained for "
        "3 epochs against 1 epoch for model A."
    )
    assert R.cost_sentence({"model_a": {"epochs": 1}, "model_b": trains["model_b"]}) == ""
    unknown = {key: {"parameters": t["parameters"]} for key, t in trains.items()}
    assert R.cost_sentence(unknown).endswith("trained for 0 epochs against 0 epochs for model A.")


def test_the_flip_sentence_and_table_by_hand():
    on = {"ensemble": block(0.93, 5.0), "model_a": block(0.9, 6.0)}
    off = {"ensemble": block(0.925, 5.125)}
    flips = {"flip - plain": {"age_mae": {"low": -0.2, "high": -0.05},
                              "gender_accuracy": {"low": 0.001, "high": 0.009}}}  # fmt: skip
    assert R.flip_sentence({True: on, False: off}, "test", True, flips) == (
        "Averaging each prediction with that of the mirrored face changes the ensemble's age "
        "MAE by -0.125 years (95 % interval -0.20 to -0.05 years) and its gender accuracy by "
        "+0.50 points (95 % interval +0.10 to +0.90 points) (`evaluate.flip_tta` is true: the "
        "scores above are with it)."
    )
    assert R.flip_sentence({True: on, False: {}}, "test", True, flips) == ""
    table = R.flip_table({True: on, False: off}, "test", False)
    assert table.rows[0] == ["Model A", "without flip averaging (reported)", "–", "–"]
    assert table.rows[1] == ["Model A", "with flip averaging", "90.00%", "6.000"]
    assert table.rows[4] == ["Ensemble", "without flip averaging (reported)", "92.50%", "5.125"]


def frame(rows: list[tuple]) -> pd.DataFrame:
    columns = ["model", "kind", "group", "n", "age_mae", "gender_accuracy"]
    return pd.DataFrame(rows, columns=columns)


BREAKDOWN = frame([
    ("model_a", "bucket", "0-9", 40, 2.5, 0.7),
    ("model_a", "bucket", "70+", 31, 9.25, 0.9),
    ("model_a", "race", "White", 50, 5.0, 0.9),
    ("model_a", "race", "Black", 30, 6.5, 0.8),
    ("model_a", "race", "Unknown", 5, 20.0, 0.2),
    ("model_b", "bucket", "0-9", 40, 2.0, 0.75),
    ("model_b", "bucket", "70+", 31, 8.0, 0.95),
    ("model_a", "gender", "male", 3, 5.0, 0.9),
])  # fmt: skip


def test_the_failure_sentences_by_hand():
    """Worst and best bucket, least accurate bucket, the races' spread (Unknown left out);
    every group holds 30 faces or more (gender and Unknown are not counted): no warning."""
    a, b = R.failure_sentences(BREAKDOWN)
    assert a == (
        "Model A: age is worst in the 70+ bucket (MAE 9.25 years, 31 faces) and best in 0-9 "
        "(2.50); gender is least accurate in 0-9 (70.0%). Across races, age MAE runs from "
        "5.00 (White) to 6.50 (Black), 1.50 years apart, and gender accuracy from 80.0% "
        "(Black) to 90.0% (White)."
    )
    assert b.startswith("Model B: age is worst in the 70+ bucket (MAE 8.00 years, 31 faces)")
    assert "Across races" not in b  # one race or none: no spread
    small = pd.concat([BREAKDOWN, frame([("model_b", "race", "Asian", 29, 4.0, 0.9)])])
    assert R.failure_sentences(small)[-1] == (
        "Some groups are small (as few as 29 faces), so differences between them of a few "
        "points or years can be noise."
    )


def test_a_group_table_by_hand():
    table = R.group_table(BREAKDOWN, "bucket", "age")
    assert table.header == ["age", "faces", "MAE A", "MAE B", "accuracy A", "accuracy B"]
    assert table.rows == [["0-9", "40", "2.500", "2.000", "70.00%", "75.00%"],
                          ["70+", "31", "9.250", "8.000", "90.00%", "95.00%"]]  # fmt: skip


def test_the_small_words():
    assert T.fmt_gap(3, "int") == "" and T.fmt_gap(None, "pct") == "–"
    assert T.diff(None, 1.0) is None and T.diff(1.0, None) is None and T.diff(3.0, 1.0) == 2.0
    assert T.join(["a"]) == "a" and T.join(["a", "b", "c"]) == "a, b and c"
    assert T.capital("the ensemble") == "The ensemble" and T.capital("") == ""
    assert T.plural(1, "epoch") == "1 epoch" and T.plural(1200, "face") == "1,200 faces"


def test_an_interval_touching_zero_holds_it_and_never_shows_minus_zero():
    """An end of exactly 0 holds "no difference"; -0.00001 is printed +0.00, not -0.00."""

    def phrase(low: float, high: float) -> str:
        found = {"B - A": {"age_mae": {"low": low, "high": high}}}
        return T.interval_phrase(found, "A", "B", "age_mae", "3f")

    assert phrase(0.0, 0.5) == "95 % interval +0.00 to +0.50 years, indistinguishable on this split"
    assert phrase(-0.5, 0.0).endswith("+0.00 years, indistinguishable on this split")
    assert phrase(-0.00001, 0.5).startswith("95 % interval +0.00 to +0.50 years")
    assert phrase(0.1, 0.5) == "95 % interval +0.10 to +0.50 years"
    assert phrase(0.1349, 0.5) == "95 % interval +0.13 to +0.50 years"  # rounded once
