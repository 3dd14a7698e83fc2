"""Write the README's ablation table from reports/ablations/*.jsonl (never typed by hand).

    python scripts/ablations.py collect   # dvc exp show --json -> reports/ablations/cpu_runs.jsonl
    python scripts/ablations.py seeds NAME [EXP]  # the commit (or experiment EXP) and the
                                             # experiments that differ from it in seed alone ->
                                             # one row of means and spreads (cpu_seeds.jsonl)
    python scripts/ablations.py screened-seeds FILE NAME  # a screen's rows, one per seed
                                             # (screen_recipes.py --score) -> one such row
    python scripts/ablations.py           # the table between the README's ablations markers

`gpu_screen.jsonl` comes from benchmarks/screen_recipes.py; `cpu_runs.jsonl` from
`dvc exp show`: the last commits and the experiments `dvc exp run` left on them (`collect`
keeps them in git, since experiments are local refs that a clone does not have, and keeps
the rows of older commits already there).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agegender import layout
from agegender.layout import TRAINED

README = Path("docs/ablations.md")  # the table between its ablations markers
FOLDER = Path("reports/ablations")
MODEL_OF_STAGE = {model.stage: key for key, model in TRAINED.items()}
SHORT = {key: model.metrics_key for key, model in TRAINED.items()}  # blocks of metrics.json
METRICS = str(layout.METRICS)


def collect(commits: int = 3) -> None:
    """Val and test scores of the last commits and of their experiments, one line per model.

    Each row's params are those that differ from the commit before it (for a commit) or from
    its commit (for an experiment), in that model's own section of params.yaml or in the
    sections both models read (seed, data, train, evaluate).
    """
    shown = _exp_show(commits)
    rows = []
    for i, commit in enumerate(shown):
        older = shown[i + 1]["data"] if i + 1 < len(shown) else None
        if older:
            rows += _rows(commit["data"], older, f"commit {commit['rev'][:7]}")
        for rev in _finished(commit):
            rows += _rows(rev["data"], commit["data"], f"exp {rev.get('name') or ''}")
    out = FOLDER / "cpu_runs.jsonl"
    old = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    merged = merge(old, list(reversed(rows)))
    out.write_text("".join(json.dumps(row) + "\n" for row in merged))
    print(f"{len(rows)} rows from dvc exp show, {len(merged)} in all -> {out}")


def _exp_show(commits: int = 1) -> list[dict]:
    shown = json.loads(
        subprocess.run(
            [sys.executable, "-m", "dvc", "exp", "show", "--json", "-n", str(commits)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    return [c for c in shown if c["rev"] != "workspace"]


def _finished(commit: dict) -> list[dict]:
    """The experiments of a commit that did not fail (a failed one shows the metrics that
    were in its workspace, not its own)."""
    return [
        rev
        for exp in commit.get("experiments") or []
        for rev in exp.get("revs") or []
        if not rev.get("error")
    ]


def seeds(name: str, like: str | None = None) -> None:
    """The last commit, or the experiment named `like`, and the experiments (on the last
    commits) whose params differ from its params in `seed` alone: per model, the mean of each
    val and test score and its spread (half the range), as one row each."""
    shown = _exp_show(5)
    revs = [rev for parent in shown for rev in _finished(parent)]
    if like is None:
        base_data = shown[0]["data"]
    else:
        found = [rev["data"] for rev in revs if rev.get("name") == like]
        if not found:
            raise SystemExit(f"no experiment named {like!r} in dvc exp show -n 5")
        base_data = found[0]
    base = _params(base_data)
    runs = [base_data]
    for rev in revs:
        params = _params(rev["data"])
        # keys only one side has came with newer code, whose defaults keep the old behaviour
        changed = {k for k in params.keys() & base.keys() if params[k] != base[k]}
        if changed == {"seed"} and _metrics(rev["data"]):
            runs.append(rev["data"])
    values = [_metrics(run) for run in runs]
    used = sorted(int(_params(run)["seed"]) for run in runs)
    where = f"2 CPU cores, TensorFlow, dvc repro; mean ± half range of {len(runs)} seeds"
    changed = ({"params of exp": like} if like else {}) | {"seed": used}
    rows = [
        _mean_row(name, stage, changed, where, [v[model] for v in values if v.get(model)])
        for stage, model in MODEL_OF_STAGE.items()
    ]
    _add_seed_rows(rows)
    print(f"{len(runs)} runs (seeds {used}) -> {FOLDER / 'cpu_seeds.jsonl'}")


def screened_seeds(path: Path, name: str) -> None:
    """A screen run with --score, one recipe per seed (benchmarks/screen_recipes.py) -> one
    row of means and spreads in cpu_seeds.jsonl, as `seeds` makes from experiments."""
    from agegender import params as P
    from agegender.metric_table import COMPARED

    runs = [row for row in map(json.loads, path.read_text().splitlines()) if row["rc"] == 0]
    default_seed = P.load().seed
    used = sorted(int(row["set"].get("seed", default_seed)) for row in runs)
    scores = [
        {split: {s.key: row[f"{split}_{s.short}"] for s in COMPARED} for split in ("val", "test")}
        for row in runs
    ]
    changed = {k: v for k, v in runs[0]["set"].items() if k != "seed"} | {"seed": used}
    minutes = round(sum(row["minutes"] for row in runs) / len(runs), 1)
    where = f"{runs[0]['where']}; mean ± half range of {len(runs)} seeds"
    row = _mean_row(name, runs[0]["stage"], changed, where, scores)
    _add_seed_rows([row | {"minutes": minutes}])
    print(f"{len(runs)} runs (seeds {used}) -> {FOLDER / 'cpu_seeds.jsonl'}")


def _mean_row(name: str, stage: str, changed: dict, where: str, scores: list[dict]) -> dict:
    """scores: one {split: {gender_accuracy, age_mae}} per seed -> mean and half range."""
    row = {"name": name, "stage": stage, "set": changed, "where": where}
    for split in ("val", "test"):
        for key in ("gender_accuracy", "age_mae"):
            xs = [one[split][key] for one in scores]
            row[f"{split}_{key}"] = round(sum(xs) / len(xs), 4)
            row[f"{split}_{key}_spread"] = round((max(xs) - min(xs)) / 2, 4)
    return row


def _add_seed_rows(rows: list[dict]) -> None:
    out = FOLDER / "cpu_seeds.jsonl"
    old = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    merged = merge(old, rows)
    out.write_text("".join(json.dumps(row) + "\n" for row in merged))


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """The old rows (older commits fall out of `dvc exp show -n`), then the new ones; a new
    row replaces an old one of the same recipe and stage."""
    fresh = {(row["name"], row["stage"]) for row in new}
    return [row for row in old if (row["name"], row["stage"]) not in fresh] + new


def _rows(data: dict, base: dict, name: str) -> list[dict]:
    params, before = _params(data), _params(base)
    metrics, base_metrics = _metrics(data), _metrics(base)
    if not metrics:
        return []
    rows, defaults = [], _defaults()
    for stage, model in MODEL_OF_STAGE.items():
        others = tuple(f"{m}." for m in SHORT if m != model)  # the other model's section
        changed = {
            k: v
            for k, v in params.items()
            if not k.startswith(others) and before.get(k, defaults.get(k)) != v
        }
        scores = metrics[model]
        if not changed and scores == base_metrics.get(model):
            continue  # neither its params nor its scores moved: nothing to compare
        rows.append(
            {
                "name": name,
                "stage": stage,
                "set": changed,
                "where": "2 CPU cores, TensorFlow, dvc repro",
                "val_gender_accuracy": scores["val"]["gender_accuracy"],
                "val_age_mae": scores["val"]["age_mae"],
                "test_gender_accuracy": scores["test"]["gender_accuracy"],
                "test_age_mae": scores["test"]["age_mae"],
            }
        )
    return rows


def _metrics(data: dict) -> dict:
    """model -> split -> {gender_accuracy, age_mae}, from either layout of metrics.json: the
    compact one (A: {val_gender, val_age_mae, ...}) or the one before issue 22 (full scores)."""
    raw = ((data.get("metrics") or {}).get(METRICS) or {}).get("data") or {}
    out = {}
    for model, short in SHORT.items():
        if short in raw:  # compact: A: {val_acc, val_mae, ...}
            row = raw[short]
            pick = {
                s: (
                    row.get(f"{s}_acc", row.get(f"{s}_gender")),
                    row.get(f"{s}_mae", row.get(f"{s}_age_mae")),
                )
                for s in ("val", "test")
            }
        elif model in raw:  # full: model_a: {val: {gender_accuracy, age_mae, ...}, ...}
            full = raw[model]
            pick = {
                s: ((full.get(s) or {}).get("gender_accuracy"), (full.get(s) or {}).get("age_mae"))
                for s in ("val", "test")
            }
        else:
            continue
        out[model] = {s: {"gender_accuracy": g, "age_mae": a} for s, (g, a) in pick.items()}
    return out


def _defaults() -> dict:
    """Today's params.yaml, flat: a key an older run lacks came later, with a default that
    keeps the old behaviour, so the older run had that value."""
    import yaml

    return _flat(yaml.safe_load(Path("params.yaml").read_text()))


def _params(data: dict) -> dict:
    return _flat(data["params"]["params.yaml"]["data"])


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _cell(row: dict, key: str, fmt: str) -> str:
    if not isinstance(row.get(key), (int, float)):
        return ""
    spread = row.get(f"{key}_spread")
    return format(row[key], fmt) + (f" ± {format(spread, fmt)}" if spread is not None else "")


def table() -> str:
    lines = [
        "| recipe | model | params changed | where | val gender | val age MAE | val loss "
        "| test gender | test age MAE | minutes |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for path in sorted(FOLDER.glob("*.jsonl")):
        for row in map(json.loads, path.read_text().splitlines()):
            changes = ", ".join(f"`{k}={v}`" for k, v in row["set"].items()) or "(defaults then)"
            lines.append(
                f"| {row['name']} | {row['stage'][-1].upper()} | {changes} | {row['where']} "
                f"| {_cell(row, 'val_gender_accuracy', '.1%')} "
                f"| {_cell(row, 'val_age_mae', '.2f')} | {_cell(row, 'val_loss', '.3f')} "
                f"| {_cell(row, 'test_gender_accuracy', '.1%')} "
                f"| {_cell(row, 'test_age_mae', '.2f')} | {_cell(row, 'minutes', '.1f')} |"
            )
    return "\n".join(lines)


def render() -> None:
    text = README.read_text()
    start, end = "<!-- ablations:start", "<!-- ablations:end -->"
    head, rest = text.split(start, 1)
    marker_line, _ = rest.split("\n", 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{start}{marker_line}\n{table()}\n{end}{tail}")
    print(table())


if __name__ == "__main__":
    if sys.argv[1:2] == ["collect"]:
        collect()
    elif sys.argv[1:2] == ["seeds"]:
        seeds(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif sys.argv[1:2] == ["screened-seeds"]:
        screened_seeds(Path(sys.argv[2]), sys.argv[3])
    else:
        render()
