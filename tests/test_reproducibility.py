"""The same params give the same bytes: fixed threads, time-free files, and a way to tell a
reproduction from a change where bytes cannot match (scripts/compare_runs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from agegender import runtime
from agegender.typed_yaml import ParamsError
from scripts import compare_runs
from tests.conftest import ROOT, write_params

RUNTIME_VARIABLES = ("KERAS_BACKEND", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def test_configure_takes_backend_and_threads_from_params(tmp_path, monkeypatch):
    for name in RUNTIME_VARIABLES:
        monkeypatch.setenv(name, os.environ.get(name, ""))  # records the value to restore
        monkeypatch.delenv(name)
    write_params(tmp_path, ["train.threads=3", "train.distribute.backend=jax"])
    train = runtime.configure(tmp_path / "params.yaml")
    assert train.threads == 3
    assert [os.environ[name] for name in RUNTIME_VARIABLES] == ["jax", "3", "3"]


def test_configure_leaves_a_bad_params_file_to_the_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", ""))
    monkeypatch.delenv("KERAS_BACKEND")
    (tmp_path / "params.yaml").write_text("seed: [\n")
    assert runtime.configure(tmp_path / "params.yaml") is None
    assert "KERAS_BACKEND" not in os.environ


@pytest.mark.parametrize("value", [0, -2, 257, "two"])
def test_threads_must_be_a_sensible_count(tmp_path, value):
    with pytest.raises(ParamsError, match="train.threads"):
        write_params(tmp_path, [f"train.threads={json.dumps(value)}"])


SAVE = """
import sys
from tests.conftest import SMALL, write_params
from pathlib import Path
from agegender.files import save_model
from agegender.models.model_a import build_model_a
params = write_params(Path(sys.argv[2]), SMALL)
import keras
keras.utils.set_random_seed(0)
save_model(build_model_a(params.model_a, 32, 0, serving=True), sys.argv[1])
"""


def test_a_saved_model_has_the_same_bytes_in_every_process(tmp_path):
    """Keras writes the save time into the file and numbers shared objects by memory address;
    two processes saving the same model must still write the same bytes."""
    paths = [tmp_path / "one.keras", tmp_path / "two.keras"]
    for path in paths:
        subprocess.run([sys.executable, "-c", SAVE, str(path), str(tmp_path)], cwd=ROOT, check=True)
    first, second = (p.read_bytes() for p in paths)
    assert first == second
    with zipfile.ZipFile(paths[0]) as saved:
        assert {i.date_time for i in saved.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "date_saved" not in json.loads(saved.read("metadata.json"))
    code = "import keras, sys; m = keras.saving.load_model(sys.argv[1]); print(m.output_shape)"
    loaded = subprocess.run(
        [sys.executable, "-c", code, str(paths[0])], capture_output=True, text=True, check=True
    )
    assert "(None, 1)" in loaded.stdout  # plain Keras opens it: age and gender outputs


def test_compare_runs_tells_a_rerun_from_a_change():
    rng = np.random.default_rng(0)
    runs = [{"A.test_mae": 6.0 + 0.05 * z, "A.test_acc": 0.9} for z in rng.standard_normal(4)]
    tol = compare_runs.tolerances(runs)
    sd, limit = tol["A.test_mae"]
    assert 0 < sd < 0.2 and limit > 2 * sd
    assert tol["A.test_acc"] == (0.0, 0.0)  # no spread: any difference is a change
    first, second = {"A.test_mae": 6.0, "A.test_acc": 0.9}, {"A.test_mae": 6.0 + limit / 2}
    rows = compare_runs.compare(first, {**second, "A.test_acc": 0.9}, tol)
    assert [r[-1] for r in rows] == ["within the spread", "within the spread"]
    rows = compare_runs.compare({"A.test_mae": 6.0}, {"A.test_mae": 6.0 + 2 * limit}, tol)
    assert rows[0][-1] == "BEYOND the spread"


def test_compare_runs_flags_about_one_rerun_pair_in_twenty():
    """Reruns drawn from one distribution: the 95 % tolerance, estimated from 5 of them,
    calls about 5 % of fresh pairs a change (Student's t accounts for the small sample)."""
    rng = np.random.default_rng(1)
    flagged = 0
    trials = 2000
    for _ in range(trials):
        runs = [{"m": v} for v in rng.normal(5.0, 0.1, 5)]
        _, limit = compare_runs.tolerances(runs)["m"]
        a, b = rng.normal(5.0, 0.1, 2)
        flagged += abs(a - b) > limit
    assert 0.02 < flagged / trials < 0.08


def test_compare_runs_reads_files_and_says_what_is_not_one(tmp_path):
    good = tmp_path / "m.json"
    good.write_text(json.dumps({"A": {"val_acc": 0.9, "test_mae": 6.0}}))
    assert compare_runs.load(str(good)) == {"A.val_acc": 0.9, "A.test_mae": 6.0}
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not a metrics file"):
        compare_runs.load(str(bad))
    with pytest.raises(SystemExit, match="no such file, commit or experiment"):
        compare_runs.load("no-such-run-anywhere")


def run_compare(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["compare_runs.py", *argv])
    with pytest.raises(SystemExit) as stop:
        compare_runs.main()
    code = stop.value.code
    out = capsys.readouterr().out
    return (code if isinstance(code, int) else 1), out + ("" if isinstance(code, int) else code)


SPREAD_RUNS = {"how": "test", "runs": [{"metrics": {"A": {"test_mae": v}}} for v in (6.0, 6.1)]}


@pytest.mark.parametrize(
    "spread, message",
    [
        (None, "spread.json: not found; pass --spread"),
        ("{", "spread.json: unreadable"),
        ('{"runs": 3}', 'spread.json: needs {"runs"'),
        ('{"runs": [{"metrics": {"A": {"test_mae": 6.0}}}]}', "1 run; the spread needs two"),
        (
            '{"runs": [{"metrics": {"A": {"test_mae": "6.0"}}}, {"metrics": {}}]}',
            "run 1: A.test_mae is '6.0', not a finite number",
        ),
    ],
)
def test_compare_runs_refuses_a_bad_spread_file_in_one_line(
    tmp_path, monkeypatch, capsys, spread, message
):
    path = tmp_path / "spread.json"
    if spread is not None:
        path.write_text(spread)
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"A": {"test_mae": 6.0}}))
    code, out = run_compare(monkeypatch, capsys, str(metrics), str(metrics), "--spread", str(path))
    assert code == 1 and message in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_compare_runs_says_when_nothing_was_compared_or_judged(tmp_path, monkeypatch, capsys):
    spread = tmp_path / "spread.json"
    spread.write_text(json.dumps(SPREAD_RUNS))
    empty, other, good = (tmp_path / f"{n}.json" for n in ("empty", "other", "good"))
    empty.write_text("{}")
    other.write_text(json.dumps({"AB": {"val_acc": 0.9}}))
    good.write_text(json.dumps({"A": {"test_mae": 6.0}, "AB": {"val_acc": 0.9}}))
    code, out = run_compare(monkeypatch, capsys, str(empty), str(good), "--spread", str(spread))
    assert code == 1 and "no metric in common: nothing was compared" in out
    code, out = run_compare(monkeypatch, capsys, str(other), str(good), "--spread", str(spread))
    assert code == 2 and "nothing was judged" in out and "nan" not in out
    code, out = run_compare(monkeypatch, capsys, str(good), str(good), "--spread", str(spread))
    assert code == 0 and "No spread is known for AB.val_acc: not judged." in out
    assert "Every metric with a spread is within it." in out and "nan" not in out


def test_compare_runs_refuses_a_text_valued_metric(tmp_path):
    text = tmp_path / "m.json"
    text.write_text(json.dumps({"A": {"test_mae": "six"}}))
    with pytest.raises(SystemExit, match=r"A.test_mae is 'six', not a finite number"):
        compare_runs.load(str(text))
