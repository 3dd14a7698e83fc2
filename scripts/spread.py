"""Add reruns to reports/spread.json, the spread of seeds that compare_runs.py judges by,
and print each metric's tolerance before and after.

    python scripts/spread.py seed-3 seed-4 seed-5 --label "seed {}" --how "..."

Each run is a `dvc exp` experiment's name, a commit or a metrics file (as compare_runs
reads them); its label is --label with the run's name in {}. The tolerance is compare_runs'
own: t(0.975, n - 1) x sqrt(2) x the standard deviation of the n runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.compare_runs import SPREAD, load, read_spread  # noqa: E402


def nested(flat: dict[str, float]) -> dict[str, dict[str, float]]:
    """{"A.val_acc": 0.9} -> {"A": {"val_acc": 0.9}}: spread.json's form."""
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        model, name = key.split(".", 1)
        out.setdefault(model, {})[name] = value
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="experiments, commits or metrics files")
    parser.add_argument("--label", default="{}", help="each run's label; {} is its name")
    parser.add_argument("--how", help="replace the file's sentence on how the runs were made")
    parser.add_argument("--spread", type=Path, default=SPREAD, help="the spread file")
    args = parser.parse_args(argv)
    before, _ = read_spread(str(args.spread))
    spread = json.loads(args.spread.read_text())
    for run in args.runs:
        spread["runs"].append({"label": args.label.format(run), "metrics": nested(load(run))})
    if args.how:
        spread["how"] = args.how
    args.spread.write_text(json.dumps(spread, indent=2) + "\n")
    after, _ = read_spread(str(args.spread))
    print(f"{len(spread['runs'])} runs; tolerance (95 %) of a difference, before -> after:")
    for key in after:
        old = before.get(key, (float("nan"), float("nan")))[1]
        print(f"  {key:14} {old:.4f} -> {after[key][1]:.4f}")


if __name__ == "__main__":
    main()
