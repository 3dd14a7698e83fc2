"""scripts/ablations.py: rows of the README's ablation table from `dvc exp show` data."""

from __future__ import annotations

import json

from scripts.ablations import METRICS, _rows, merge
from tests.conftest import ROOT


def exp_data(params: dict, a: tuple[float, float], b: tuple[float, float]) -> dict:
    """One revision as `dvc exp show --json` gives it: its params and metrics.json."""

    def scores(gender: float, age: float) -> dict:
        return {
            f"{s}_{k}": v
            for s in ("val", "test")
            for k, v in (("gender", gender), ("age_mae", age))
        }

    return {
        "params": {"params.yaml": {"data": params}},
        "metrics": {"reports/metrics.json": {"data": {"A": scores(*a), "B": scores(*b)}}},
    }


def test_rows_name_the_changed_params_and_skip_models_that_did_not_move():
    defaults = {"model_a": {"dropout": 0.1}, "model_b": {"dropout": 0.3}}
    base = exp_data(defaults, (0.9, 6), (0.8, 7))
    run = exp_data({**defaults, "model_b": {"dropout": 0.5}}, (0.9, 6), (0.85, 6))
    rows = _rows(run, base, "exp drop")
    assert [(r["stage"], r["set"]) for r in rows] == [("train_b", {"model_b.dropout": 0.5})]
    assert rows[0]["val_gender_accuracy"] == 0.85 and rows[0]["test_age_mae"] == 6
    # code changed, params did not: a row only for the model whose scores moved
    moved = exp_data(defaults, (0.91, 6), (0.8, 7))
    assert [(r["stage"], r["set"]) for r in _rows(moved, base, "commit x")] == [("train_a", {})]


def test_merge_keeps_older_rows_and_replaces_a_rerun_recipe():
    old = [{"name": "commit 1", "stage": "train_a", "v": 1}, {"name": "exp", "stage": "train_b"}]
    new = [{"name": "commit 1", "stage": "train_a", "v": 2}, {"name": "commit 2", "stage": "x"}]
    assert merge(old, new) == [old[1], *new]


def test_rows_read_the_metrics_layout_of_older_commits_too():
    def full(gender: float, age: float) -> dict:  # metrics.json before issue 22: every score
        split = {"gender_accuracy": gender, "age_mae": age, "age_rmse": 9.0, "n": 1000}
        return {"train": split, "val": split, "test": split}

    params = {"model_a": {}, "model_b": {"dropout": 0.1}}
    metrics = {"model_a": full(0.9, 6), "model_b": full(0.8, 7)}
    older = {"params": {"params.yaml": {"data": params}}, "metrics": {METRICS: {"data": metrics}}}
    now = exp_data({"model_a": {}, "model_b": {"dropout": 0.3}}, (0.9, 6), (0.85, 6.5))
    rows = _rows(now, older, "commit y")
    assert [(r["stage"], r["val_gender_accuracy"], r["test_age_mae"]) for r in rows] == [
        ("train_b", 0.85, 6.5)
    ]


def test_a_spread_shows_beside_its_mean():
    from scripts.ablations import _cell

    row = {"test_gender_accuracy": 0.941, "test_gender_accuracy_spread": 0.0025}
    assert _cell(row, "test_gender_accuracy", ".1%") == "94.1% ± 0.2%"
    assert _cell({"val_age_mae": 4.5}, "val_age_mae", ".2f") == "4.50"


def test_screened_seeds_make_one_row_of_means_and_spreads(tmp_path, monkeypatch):
    import json

    import scripts.ablations as ablations

    def screened(seed: int | None, acc: float, mae: float) -> dict:
        seed_set = {} if seed is None else {"seed": seed}
        scores = {"val_acc": acc, "val_mae": mae, "test_acc": acc - 0.01, "test_mae": mae + 0.1}
        return {"name": f"A-{seed}", "stage": "train_a", "set": {"model_a.x": 1, **seed_set},
                "where": "screen", "minutes": 10.0, "rc": 0, **scores}  # fmt: skip

    rows = [screened(None, 0.90, 6.0), screened(1, 0.92, 5.0), {"rc": 1, "set": {"seed": 2}}]
    screen = tmp_path / "screen.jsonl"
    screen.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setattr(ablations, "FOLDER", tmp_path)
    monkeypatch.chdir(ROOT)  # params.yaml gives the seed of a recipe that sets none
    ablations.screened_seeds(screen, "progressive")
    (row,) = map(json.loads, (tmp_path / "cpu_seeds.jsonl").read_text().splitlines())
    assert row["set"] == {"model_a.x": 1, "seed": [1, 42]} and row["stage"] == "train_a"
    assert row["val_gender_accuracy"] == 0.91 and row["val_gender_accuracy_spread"] == 0.01
    assert row["test_age_mae"] == 5.6 and row["test_age_mae_spread"] == 0.5
    assert row["minutes"] == 10.0 and row["where"] == "screen; mean ± half range of 2 seeds"


def test_a_failed_experiment_is_no_row():
    from scripts.ablations import _finished

    ok = {"name": "ok", "error": None, "data": {}}
    failed = {"name": "failed", "error": {"msg": "Experiment run failed"}, "data": {}}
    commit = {"experiments": [{"revs": [ok]}, {"revs": [failed]}]}
    assert _finished(commit) == [ok]
    assert _finished({"experiments": None}) == []


def test_a_change_both_models_read_names_both_rows():
    defaults = {"data": {"train_all": False}, "model_a": {"dropout": 0.1}, "model_b": {}}
    base = exp_data(defaults, (0.9, 6), (0.8, 7))
    run = exp_data({**defaults, "data": {"train_all": True}}, (0.92, 5), (0.85, 6))
    rows = _rows(run, base, "exp full-data")
    assert [(r["stage"], r["set"]) for r in rows] == [
        ("train_a", {"data.train_all": True}),
        ("train_b", {"data.train_all": True}),
    ]
    # a key the older run lacks had today's default there: no change, and no row
    newer = exp_data({**defaults, "train": {"loader": {"kind": "arrays"}}}, (0.9, 6), (0.8, 7))
    assert _rows(newer, base, "commit y") == []


def test_a_rerun_joins_the_spread_and_its_tolerances_are_printed(tmp_path, capsys):
    """scripts/spread.py: a metrics file becomes a labelled run of spread.json, and each
    metric's tolerance is printed before and after (three equal runs and a fourth 0.02
    away: t(0.975, 3) x sqrt(2) x sd 0.01)."""
    from scripts import spread

    same = {"A": {"val_acc": 0.90}}
    (tmp_path / "spread.json").write_text(
        json.dumps({"how": "x", "runs": [{"label": str(i), "metrics": same} for i in range(3)]})
    )
    (tmp_path / "new.json").write_text(json.dumps({"A": {"val_acc": 0.92}}))
    spread.main(
        [str(tmp_path / "new.json"), "--label", "seed 9", "--spread", str(tmp_path / "spread.json")]
    )
    runs = json.loads((tmp_path / "spread.json").read_text())["runs"]
    assert runs[-1] == {"label": "seed 9", "metrics": {"A": {"val_acc": 0.92}}} and len(runs) == 4
    printed = capsys.readouterr().out
    assert "4 runs" in printed and "A.val_acc      0.0000 -> 0.0450" in printed
