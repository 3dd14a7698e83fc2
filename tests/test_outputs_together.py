"""A stage's outputs change together or not at all: evaluate's metrics never come from
another run than its intervals, the report never from another run than its figures."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
from pathlib import Path

import pytest

from agegender import files
from agegender.files import atomic_path, together, write_text, written
from tests.conftest import SMALL, write_params

EVALUATE_OUTPUTS = ("reports/eval", "reports/metrics.json")
REPORT_OUTPUTS = ("reports/report.md", "reports/report.html", "reports/figures", "reports/charts")


def hashes(root: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Every file under the named outputs, by path, with its md5; temporaries included."""
    out = {}
    for name in names:
        path = root / name
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                out[str(file.relative_to(root))] = hashlib.md5(file.read_bytes()).hexdigest()
    return out


class Killed(BaseException):
    """Stands for SIGKILL at a chosen moment: nothing of the stage runs after it."""


def kill_at_output(monkeypatch, number: int) -> list[int]:
    """Raise Killed when the stage starts writing its `number`-th output file (atomic_path
    sets each temporary's mode first). Returns the count of outputs begun."""
    begun = [0]
    real = os.fchmod

    def fchmod(fd: int, mode: int) -> None:
        begun[0] += 1
        if begun[0] == number:
            raise Killed
        real(fd, mode)

    monkeypatch.setattr(os, "fchmod", fchmod)
    return begun


def test_together_puts_files_in_place_at_its_end_and_nothing_on_failure(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    with pytest.raises(Killed), together():
        write_text(tmp_path / "a.txt", "new")
        assert (tmp_path / "a.txt").read_text() == "old"  # not yet
        assert written(tmp_path / "a.txt").read_text() == "new"  # where it is meanwhile
        raise Killed
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["old", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temporaries
    with together():
        write_text(tmp_path / "a.txt", "new")
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("new")
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["new", "new"]
    assert written(tmp_path / "a.txt") == tmp_path / "a.txt"


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, whatever pytest inherited: a shell starts a background
    job with SIGINT ignored, and an ignored signal raises nothing when it is let through."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_the_moves_waits_until_all_are_in(tmp_path, monkeypatch, python_sigint):
    real = os.replace
    moved = []

    def replace(source, target):
        real(source, target)
        moved.append(target)
        if len(moved) == 1:
            signal.raise_signal(signal.SIGINT)  # deferred until every file is in place

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), together():
        for name in ("a.txt", "b.txt", "c.txt"):
            write_text(tmp_path / name, "new")
    assert len(moved) == 3
    assert all((tmp_path / n).read_text() == "new" for n in ("a.txt", "b.txt", "c.txt"))


@pytest.fixture
def pipeline(small_pipeline, tmp_path, monkeypatch) -> Path:
    """A copy of the small pipeline, as the working folder, where the report ran once."""
    from agegender.report import build as report

    folder = tmp_path / "project"
    shutil.copytree(small_pipeline, folder)
    monkeypatch.chdir(folder)
    report.main()
    return folder


def test_evaluate_killed_at_any_output_leaves_the_previous_set(pipeline, monkeypatch):
    """The bootstrap's resamples changed (trust.json's intervals change): killed as it
    writes its 1st, 5th or last output, every output is still the previous run's."""
    from stages import evaluate

    before = hashes(pipeline, EVALUATE_OUTPUTS)
    with monkeypatch.context() as patch:
        begun = kill_at_output(patch, 10**6)
        evaluate.main()  # counts the outputs only; the same params as before
    outputs = begun[0]
    assert outputs >= 10 and hashes(pipeline, EVALUATE_OUTPUTS) == before
    write_params(pipeline, [*SMALL, "evaluate.bootstrap=160"])
    for number in (1, 5, outputs):
        with monkeypatch.context() as patch, pytest.raises(Killed):
            kill_at_output(patch, number)
            evaluate.main()
        assert hashes(pipeline, EVALUATE_OUTPUTS) == before, number
    evaluate.main()
    after = hashes(pipeline, EVALUATE_OUTPUTS)
    assert after["reports/eval/trust.json"] != before["reports/eval/trust.json"]


def test_report_killed_after_its_figures_leaves_the_previous_report(pipeline, monkeypatch):
    from agegender.report import build as report

    before = hashes(pipeline, REPORT_OUTPUTS)
    write_params(pipeline, [*SMALL, "report.worst_faces=2"])  # other thumbnails, other text
    with monkeypatch.context() as patch:
        begun = kill_at_output(patch, 10**6)
        report.main()
    new = hashes(pipeline, REPORT_OUTPUTS)
    assert new != before
    shutil.rmtree(pipeline / "reports" / "figures")  # back to the first run's outputs
    write_params(pipeline, [*SMALL])
    report.main()
    assert hashes(pipeline, REPORT_OUTPUTS) == before
    write_params(pipeline, [*SMALL, "report.worst_faces=2"])
    for number in (3, begun[0] - 1, begun[0]):  # among the figures; report.md; report.html
        with monkeypatch.context() as patch, pytest.raises(Killed):
            kill_at_output(patch, number)
            report.main()
        assert hashes(pipeline, REPORT_OUTPUTS) == before, number
