"""CI's job summary, in markdown: what this commit changes against a base revision.

    python scripts/ci_summary.py --base main --sample .ci-sample     # after the tests ran
    python scripts/ci_summary.py --base main --sample /tmp/s --run   # run the sample first

DVC's CML reports, without a token or an outside service: the params that differ from
the base (`dvc params diff`), the committed metrics against the base's (`dvc metrics
diff`: a commit with a new full run shows its effect), and the metrics of the sample
pipeline that the tests ran on this commit (the sample's own numbers: a tiny run, for
spotting a broken stage, not for judging a model).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python scripts/ci_summary.py`: the tests' sample helpers

from scripts.repo import sh  # noqa: E402

COLUMNS = ("val_acc", "val_mae", "test_acc", "test_mae")


def dvc_diff(kind: str, base: str) -> str:
    """`dvc params diff` or `dvc metrics diff` against base, as a markdown table."""
    done = sh("dvc", kind, "diff", base, "--md", cwd=ROOT, check=False)
    if done.returncode != 0:
        return f"No `{base}` to compare with (`dvc {kind} diff {base}`: {done.stderr.strip()})."
    return done.stdout.strip() or f"No {kind} differ from `{base}`."


def sample_table(folder: Path) -> str:
    """The sample run's reports/metrics.json (written there by the pipeline test)."""
    path = folder / "metrics.json"
    if not path.is_file():
        return f"No sample run in `{folder}` (the tests write it; or pass --run)."
    metrics = json.loads(path.read_text())
    rows = ["| model | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for model, block in metrics.items():
        rows.append(f"| {model} | " + " | ".join(f"{block.get(c, '–')}" for c in COLUMNS) + " |")
    settings = folder / "sample.txt"
    setting = settings.read_text().strip() if settings.is_file() else ""
    return "\n".join(rows) + (f"\n\nSample: {setting}" if setting else "")


def run_sample(folder: Path) -> None:
    """The tests' sample pipeline (tests/pipeline.py), its metrics kept in `folder`."""
    from tests.pipeline import SAMPLE, make_repo

    repo = folder / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    make_repo(repo, SAMPLE)
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, check=True)
    keep_sample(repo, folder, SAMPLE)


def keep_sample(repo: Path, folder: Path, overrides: list[str]) -> None:
    """What the summary reads of a sample run: its metrics and the settings it ran with."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo / "reports" / "metrics.json", folder / "metrics.json")
    (folder / "sample.txt").write_text(", ".join(f"`{o}`" for o in overrides) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the revision to compare with")
    parser.add_argument("--sample", type=Path, default=ROOT / ".ci-sample")
    parser.add_argument("--run", action="store_true", help="run the sample pipeline first")
    args = parser.parse_args()
    if args.run:
        run_sample(args.sample)
    print(f"# What this commit changes against `{args.base}`\n")
    print(f"## Params\n\n{dvc_diff('params', args.base)}\n")
    print(f"## Committed metrics\n\n{dvc_diff('metrics', args.base)}\n")
    print(f"## The sample pipeline on this commit\n\n{sample_table(args.sample)}")


if __name__ == "__main__":
    main()
