"""The README is a front door: short, its numbers generated from the committed files, and
no word of the project's internal bookkeeping in the user docs."""

from __future__ import annotations

import json
import re

import pytest

from agegender import params as P
from agegender.layout import SCORE_FILES, SHIFTS, TRUST
from scripts.readme_results import render
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}


def test_the_readme_is_short_and_starts_with_the_two_commands():
    assert len(README.splitlines()) < 250
    commands = README.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert commands[0].endswith("dvc repro") and commands[1].endswith("pytest")


def test_the_readme_results_are_those_of_the_committed_files():
    """Every number between the results markers comes from reports/: rerunning the
    generator on the committed files gives the same text, to the character."""
    params = P.load(ROOT / "params.yaml")
    scores = json.loads((ROOT / SCORE_FILES[params.evaluate.flip_tta]).read_text())
    trust = json.loads((ROOT / TRUST).read_text())
    shifts = json.loads((ROOT / SHIFTS).read_text()) if (ROOT / SHIFTS).is_file() else None
    block = README.split("<!-- results:start", 1)[1].split("\n", 1)[1]
    block = block.split("<!-- results:end -->", 1)[0]
    assert block == render(params, scores, trust, shifts)
    metrics = json.loads((ROOT / "reports" / "metrics.json").read_text())
    assert (
        f"{metrics['B']['test_mae']:.2f}" in block and f"{metrics['AB']['test_acc']:.1%}" in block
    )


@pytest.mark.parametrize("name", ["README.md", *sorted(DOCS)])
def test_user_docs_never_speak_of_issues_or_sessions(name):
    text = README if name == "README.md" else DOCS[name]
    text = text.replace("keras-team/keras issue", "")  # a link to an upstream bug report
    assert not re.search(r"\b(issues?|sessions?)\b", text, re.IGNORECASE), name


def test_every_docs_link_in_the_readme_exists():
    for target in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / target).is_file(), target
