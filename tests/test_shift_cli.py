"""agegender-evaluate and agegender-calibrate on the tiny pipeline's models, as a user runs
them: a labelled folder in, a table, scores.json, faces.csv and a calibration file out."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.data import load_split
from agegender.errors import UserError
from agegender.evaluate import calibration as C
from agegender.serve import predict
from agegender.shift import commands
from agegender.shift.arguments import calibrate_args, evaluate_args
from tests.conftest import ROOT


@pytest.fixture
def home(small_pipeline, monkeypatch):
    """The tiny pipeline as the project the commands find their models in."""
    monkeypatch.setenv("AGEGENDER_HOME", str(small_pipeline))
    return small_pipeline


def write_faces(folder: Path, prepared: Path, splits: tuple[str, ...]) -> Path:
    """Prepared faces as lossless PNG files with UTKFace-style names."""
    for name in splits:
        split = load_split(name, prepared)
        labels = zip(split.images, split.age, split.gender, strict=True)
        for i, (image, age, gender) in enumerate(labels):
            Image.fromarray(np.asarray(image)).save(folder / f"{age}_{gender}_0_{name}{i:012d}.png")
    return folder


@pytest.fixture(scope="module")
def test_split_folder(small_pipeline, tmp_path_factory) -> Path:
    """The tiny pipeline's test faces (100)."""
    prepared = small_pipeline / "data" / "prepared"
    return write_faces(tmp_path_factory.mktemp("test_split"), prepared, ("test",))


@pytest.fixture(scope="module")
def labelled_folder(small_pipeline, tmp_path_factory) -> Path:
    """The tiny pipeline's val and test faces (200): enough to fit 100 and check 100."""
    prepared = small_pipeline / "data" / "prepared"
    return write_faces(tmp_path_factory.mktemp("labelled"), prepared, ("val", "test"))


def test_evaluate_on_the_test_split_reproduces_the_evaluate_stage(
    home, test_split_folder, tmp_path, capsys
):
    """The same faces, the same model: the same scores to every digit evaluate writes."""
    out = tmp_path / "out"
    commands.evaluate(evaluate_args([str(test_split_folder), "--crops", "--out", str(out)]))
    printed = capsys.readouterr().out
    scored = json.loads((out / "scores.json").read_text())
    stage = json.loads((home / "reports" / "eval" / "scores_flip.json").read_text())["model_b"][
        "test"
    ]
    assert scored["scored"] == stage["n"]
    assert scored["gender"]["gender_accuracy"] == stage["gender_accuracy"]
    assert scored["age"]["age_mae"] == stage["age_mae"]
    assert scored["age"]["age_within_5"] == stage["age_within_5"]
    trust = json.loads((home / "reports" / "eval" / "trust.json").read_text())["models"]["model_b"]
    assert scored["age"]["coverage"] == trust["coverage"]
    assert scored["gender"]["ece"] == trust["gender"]["after"]["ece"]
    line = f"gender {stage['gender_accuracy']:.2%}, age MAE {stage['age_mae']:.2f}"
    assert line in printed and "80% range holds" in printed
    with open(out / "faces.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == stage["n"] and rows[0].keys() >= {"age", "predicted_age", "age_low"}
    assert all(
        float(r["age_low"]) <= float(r["predicted_age"]) <= float(r["age_high"]) for r in rows
    )


def test_calibrate_writes_a_file_predict_applies(home, labelled_folder, tmp_path, capsys):
    out = tmp_path / "mine.json"
    commands.calibrate(calibrate_args([str(labelled_folder), "--crops", "--out", str(out)]))
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    assert document["model"] == "B" and document["faces"] == 100  # a fifth, at least 100
    assert document["check"]["faces"] == len(list(labelled_folder.iterdir())) - 100
    block = C.read(out, C.USER)
    assert "before" in printed and "after" in printed and "use it with" in printed
    face = sorted(labelled_folder.iterdir())[0]
    status = predict.cli([str(face), "--crops", "--calibration", str(out)])
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert status == 0 and record["age_low"] <= record["age"] <= record["age_high"]
    plain = predict.cli([str(face), "--crops", "--model", "B"])
    raw = json.loads(capsys.readouterr().out.splitlines()[0])
    fitted = C.apply(block, np.array([raw["age"]]), np.array([0.5]))
    assert plain == 0 and record["age"] == pytest.approx(
        round(float(fitted["age"][0]), 1), abs=0.11
    )
    with pytest.raises(UserError, match="fitted for model B, not A"):
        predict.cli([str(face), "--crops", "--calibration", str(out), "--model", "A"])


def test_calibrate_refuses_too_few_faces(home, test_split_folder, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(test_split_folder.iterdir())[:60]:
        (few / path.name).write_bytes(path.read_bytes())
    with pytest.raises(UserError, match="needs 100 to fit and 25 more to check"):
        commands.calibrate(calibrate_args([str(few), "--crops", "--out", str(tmp_path / "c.json")]))
    assert not (tmp_path / "c.json").exists()


def test_adapt_retrains_model_b_heads_and_says_whether_it_kept_them(
    home, labelled_folder, tmp_path, capsys, monkeypatch
):
    from agegender.shift import adapt

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(adapt, "BAG", 2)  # two heads averaged: the path of five, in less time
    monkeypatch.setattr(adapt, "SETTINGS", adapt.SETTINGS[:2])  # a choice still to make
    out = tmp_path / "adapted.json"
    argv = [str(labelled_folder), "--crops", "--adapt", "--out", str(out)]
    commands.calibrate(calibrate_args(argv))
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    verdict = document["adapted"]
    assert "UTKFace training faces, mirrored too" in printed
    assert "adapt: age MAE on the checking faces" in printed
    assert (verdict["mae_after"] < verdict["mae_before"]) == verdict["kept"]
    assert out.with_suffix(".keras").exists() == verdict["kept"]
    assert document["model"] == ("adapted.keras" if verdict["kept"] else "B")
    assert "2 heads trained on all your fitting faces" in printed
    # a second run takes the training faces' features from the cache, and adapts the same
    commands.calibrate(calibrate_args([*argv[:-1], str(tmp_path / "again.json")]))
    assert "training faces' features from" in capsys.readouterr().out
    again = json.loads((tmp_path / "again.json").read_text())
    # the same up to float order (TensorFlow's CPU reductions are not bitwise repeatable)
    assert again["adapted"]["kept"] == verdict["kept"]
    assert again["adapted"]["mae_after"] == pytest.approx(verdict["mae_after"], abs=0.05)
    with pytest.raises(UserError, match="retrains model B"):
        commands.calibrate(calibrate_args([*argv, "--model", "A"]))


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--out", "c.txt"], "names a .json file"),
        (["--out", "c.json", "--fit", "50"], "at least 100"),
        (["--out", "c.json", "--level", "1.5"], "--level"),
        (["--out", "c.json", "--min-face-score", "2"], "between 0 and 1"),
    ],
)
def test_calibrate_usage_errors_answer_before_any_work(tmp_path, argv, words, capsys):
    with pytest.raises(SystemExit):
        calibrate_args([str(tmp_path), *argv])
    assert words in capsys.readouterr().err


def test_the_installed_commands_find_the_checkout_from_another_folder(tmp_path):
    """Run from a folder outside the checkout, with no AGEGENDER_HOME: the models are looked
    for in the checkout `pip install -e .` was run from (one folder above the package)."""
    face = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(face)
    env = {k: v for k, v in os.environ.items() if k != "AGEGENDER_HOME"}
    script = Path(sys.executable).parent / "agegender-predict"
    done = subprocess.run(
        [str(script), "--crops", str(face)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    if (ROOT / "models" / "age_gender_B.keras").exists():
        assert done.returncode == 0 and '"age"' in done.stdout, done.stderr
    else:  # a clean clone: the message names the checkout's models folder
        assert str(ROOT / "models" / "age_gender_B.keras") in done.stderr
    for command in ("agegender-evaluate", "agegender-calibrate"):
        helped = subprocess.run(
            [str(Path(sys.executable).parent / command), "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert helped.returncode == 0 and "labels.csv" in helped.stdout
