"""Do two runs agree within the spread that changing the seed alone gives?

    python scripts/compare_runs.py                # the workspace's metrics against HEAD's
    python scripts/compare_runs.py HEAD~3 HEAD    # two commits
    python scripts/compare_runs.py HEAD my-exp    # a commit and a `dvc exp` experiment
    python scripts/compare_runs.py a.json b.json  # two metrics files (another machine's run)

Where bytes cannot match (another CPU model, a GPU, other library versions), training adds
its floats in another order and the weights come out different: a perturbation of the same
kind as another seed, and no larger. reports/spread.json holds the committed pipeline run
with several seeds (scripts/spread.py adds more); a difference within t(0.975, n-1) *
sqrt(2) * their standard deviation is
a reproduction. Beyond it, something changed. One table, metric by metric; exit status 1 if
any is beyond, 2 if nothing could be judged (no metric in common, or none with a spread).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
METRICS = "reports/metrics.json"
SPREAD = ROOT / "reports" / "spread.json"


def flat(metrics: dict, source: str) -> dict[str, float]:
    """{"A": {"test_mae": 6.0}} -> {"A.test_mae": 6.0}; anything else stops with one line
    naming `source` and the value."""
    if not isinstance(metrics, dict) or not all(isinstance(b, dict) for b in metrics.values()):
        sys.exit(f"compare_runs: {source}: not a metrics file like {METRICS}")
    out = {}
    for model, block in metrics.items():
        for key, value in block.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value):
                sys.exit(f"compare_runs: {source}: {model}.{key} is {value!r}, not a finite number")
            out[f"{model}.{key}"] = float(value)
    return out


def git_show(rev: str, path: str) -> str | None:
    done = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout if done.returncode == 0 else None


def experiment_ref(name: str) -> str | None:
    """The git ref of a `dvc exp` experiment called `name` (DVC keeps them under refs/exps)."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    return next((ref for ref in refs if ref.rsplit("/", 1)[-1] == name), None)


def load(run: str | None) -> dict[str, float]:
    """A run's metrics: a file, a git revision, an experiment's name, or None (workspace)."""
    if run is None:
        run = str(ROOT / METRICS)
    if Path(run).is_file():
        text = Path(run).read_text()
    else:
        ref = run if git_show(run, METRICS) is not None else experiment_ref(run)
        text = git_show(ref, METRICS) if ref else None
        if text is None:
            sys.exit(f"compare_runs: {run}: no such file, commit or experiment")
    try:
        return flat(json.loads(text), run)
    except (json.JSONDecodeError, RecursionError):
        sys.exit(f"compare_runs: {run}: not a metrics file like {METRICS}")


def read_spread(path: str) -> tuple[dict[str, tuple], str]:
    """The tolerances from a spread file (reports/spread.json's form) and its sentence."""
    try:
        spread = json.loads(Path(path).read_text())
        runs = [
            flat(run["metrics"], f"{path}, run {i + 1}") for i, run in enumerate(spread["runs"])
        ]
        how = str(spread.get("how", ""))
    except FileNotFoundError:
        sys.exit(f"compare_runs: {path}: not found; pass --spread with a file of reruns")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        sys.exit(f"compare_runs: {path}: unreadable ({error}); restore it with git checkout")
    except (KeyError, TypeError, AttributeError):
        sys.exit(f'compare_runs: {path}: needs {{"runs": [{{"metrics": ...}}, ...]}}')
    if len(runs) < 2:
        sys.exit(f"compare_runs: {path}: {len(runs)} run; the spread needs two runs or more")
    return tolerances(runs), f"{len(runs)} reruns define the spread ({how})"


def tolerances(runs: list[dict[str, float]], level: float = 0.95) -> dict[str, tuple]:
    """{metric: (sd, tolerance)} from reruns that differ in seed (or float order) only.

    The difference of two such runs has sd * sqrt(2); with n runs the sd is itself uncertain,
    hence Student's t with n - 1 degrees of freedom instead of the normal's 1.96."""
    n = len(runs)
    if n < 2:
        raise ValueError("the spread needs two runs or more")
    t = stats.t.ppf(0.5 + level / 2, n - 1)
    out = {}
    for key in runs[0]:
        values = [run[key] for run in runs if key in run]
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        out[key] = (sd, t * math.sqrt(2) * sd)
    return out


def compare(a: dict, b: dict, tol: dict) -> list[list[str]]:
    rows = []
    for key in a:
        if key not in b:
            continue
        diff = b[key] - a[key]
        sd, limit = tol.get(key, (math.nan, math.nan))
        verdict = (
            "no spread known"
            if math.isnan(limit)
            else ("within the spread" if abs(diff) <= limit else "BEYOND the spread")
        )
        allowed = "–" if math.isnan(limit) else f"{limit:.4f}"
        rows.append([key, f"{a[key]:g}", f"{b[key]:g}", f"{diff:+.4f}", allowed, verdict])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", nargs="?", default="HEAD", help="default: HEAD")
    parser.add_argument("second", nargs="?", help="default: the workspace")
    parser.add_argument("--spread", default=str(SPREAD), help="reruns that define the spread")
    args = parser.parse_args()
    tol, how = read_spread(args.spread)
    rows = compare(load(args.first), load(args.second), tol)
    if not rows:
        sys.exit(
            f"compare_runs: {args.first} and {args.second or 'the workspace'} have no metric "
            f"in common: nothing was compared"
        )
    header = ["metric", args.first, args.second or "workspace", "difference", "allowed", ""]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    beyond = [r[0] for r in rows if r[-1].startswith("BEYOND")]
    unknown = [r[0] for r in rows if r[-1] == "no spread known"]
    verdict = (
        f"Beyond it: {', '.join(beyond)}." if beyond else "Every metric with a spread is within it."
    )
    if unknown and not beyond:
        verdict += f" No spread is known for {', '.join(unknown)}: not judged."
    if len(unknown) == len(rows):
        verdict = "No compared metric has a spread: nothing was judged."
    print(f"\n{how}. {verdict}")
    sys.exit(1 if beyond else 2 if len(unknown) == len(rows) else 0)


if __name__ == "__main__":
    main()
