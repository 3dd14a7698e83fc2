"""The report stage: every number traceable to the pipeline's files, HTML self-contained,
no face pixels in report.md (it is committed to git)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agegender import params as P
from agegender.errors import UserError
from agegender.layout import FIGURES as FIGURE_DIR
from agegender.layout import MODELS, SPLITS, TRAINED
from agegender.metric_table import SCORES
from agegender.report import build as report
from agegender.report.comparison import ensemble_sentence, winner_sentence
from agegender.report.document import Figure, Heading, Table, Text, to_html, to_markdown
from agegender.report.reproduce import lock_rows
from agegender.report.shift_section import shift_section
from agegender.report.text import fmt, fmt_gap

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
FIGURES = (
    "age_histogram", "curves_model_a", "curves_model_b", "age_buckets", "age_scatter",
    "age_range", "gender_reliability",
)  # fmt: skip


@pytest.fixture(scope="module")
def project(small_pipeline, tmp_path_factory) -> Path:
    """A copy of the small pipeline where the report stage ran once (loading models is slow)."""
    folder = tmp_path_factory.mktemp("report") / "project"
    shutil.copytree(small_pipeline, folder)
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        report.main()
    finally:
        os.chdir(cwd)
    return folder


@pytest.fixture(scope="module")
def markdown(project) -> str:
    return (project / "reports" / "report.md").read_text()


@pytest.fixture(scope="module")
def page(project) -> str:
    return (project / "reports" / "report.html").read_text()


def read_json(project: Path, path: str) -> dict:
    return json.loads((project / path).read_text())


def tables(markdown: str) -> dict[str, list[list[list[str]]]]:
    """report.md's tables, grouped under the heading above them: [table][row][cell]."""
    found: dict[str, list[list[list[str]]]] = {}
    heading, current = "", None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading, current = line.lstrip("#").strip(), None
        elif line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if current is None:
                current = []
                found.setdefault(heading, []).append(current)
            if not all(re.fullmatch(r"-+:?", c) for c in cells):  # skip the alignment row
                current.append(cells)
        else:
            current = None
    return found


def number(cell: str) -> float | None:
    """A table cell back to the value in the JSON: '54.00%' -> 0.54, '1,234' -> 1234."""
    if cell == "–":
        return None
    if cell.endswith(" pts"):
        return float(cell[:-4]) / 100
    if cell.endswith("%"):
        return float(cell[:-1]) / 100
    return float(cell.replace(",", ""))


def same(cell: str, expected: float | None) -> bool:
    value = number(cell)
    if value is None or expected is None:
        return value is None and expected is None
    return value == pytest.approx(expected, abs=1e-9)


def one_table(markdown: str, heading: str) -> list[list[str]]:
    found = tables(markdown)
    assert heading in found, f"no table under '{heading}'; headings: {list(found)}"
    return found[heading][0]


# --- the report from the small pipeline ---------------------------------------------------------


def test_report_has_every_section_and_figure(project, markdown):
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    numbers = [h.split(".")[0] for h in headings]
    assert numbers == ["## 1", "## 2", "## 3", "## 4", "## 5", "## 6", "## 7"]
    assert "How much to trust a prediction" in headings[4]
    assert "Beyond the test split" in headings[5]
    assert "`python scripts/shifts.py` measures" in markdown  # no reports/shifts.json here
    assert (project / "reports" / "figures" / "worst_faces.png").is_file()
    for name in FIGURES:  # charts from numbers: SVG, linked from report.md
        assert (project / "reports" / "charts" / f"{name}.svg").is_file(), name
        assert f"](charts/{name}.svg)" in markdown
    assert "](figures/" not in markdown  # no face thumbnail is linked from the git copy


@pytest.mark.parametrize("model", ["model_a", "model_b"])
def test_scores_per_split_equal_the_scores_file(project, markdown, model):
    metrics = read_json(project, "reports/eval/scores_flip.json")[model]
    table = one_table(markdown, f"{MODELS[model].label}: scores per split")
    header, rows = table[0], {row[0]: row for row in table[1:]}
    assert header == ["metric", "train", "val", "test", "val - train"]
    for score in SCORES:
        key, row = score.key, rows[score.label]
        for column, split in enumerate(SPLITS, start=1):
            assert same(row[column], metrics[split][key]), (model, key, split, row)
        if score.fmt != "int" and metrics["val"][key] is not None:
            gap = number(row[4])
            assert gap == pytest.approx(metrics["val"][key] - metrics["train"][key], abs=1e-6)


def test_comparison_table_equals_the_scores_file(project, markdown):
    metrics = read_json(project, "reports/eval/scores_flip.json")
    focus = "test" if metrics["model_a"]["test"]["n"] else "val"
    table = one_table(markdown, f"Scores on the {focus} split")
    header, rows = table[0], {row[0]: row for row in table[1:]}
    assert header == ["model", *(score.label for score in SCORES)]
    for model in MODELS:
        for column, score in enumerate(SCORES, start=1):
            cell = rows[MODELS[model].label][column]
            assert same(cell, metrics[model][focus][score.key]), (model, score.key)


def test_flip_table_equals_both_json_files(project, markdown):
    metrics = read_json(project, "reports/eval/scores_flip.json")
    other = read_json(project, "reports/eval/scores_no_flip.json")
    focus = "test" if metrics["model_a"]["test"]["n"] else "val"
    rows = one_table(markdown, "Flip averaging")[1:]
    assert len(rows) == 2 * len(MODELS)
    for model_label, prediction, accuracy, mae in rows:
        model = next(m for m, spec in MODELS.items() if spec.label == model_label)
        source = metrics if "(reported)" in prediction else other
        assert same(accuracy, source[model][focus]["gender_accuracy"])
        assert same(mae, source[model][focus]["age_mae"])


@pytest.mark.parametrize("model,phases", [("model_a", ["fit"]), ("model_b", ["phase1", "phase2"])])
def test_training_tables_equal_training_metrics(project, markdown, model, phases):
    train = read_json(project, f"{TRAINED[model].live_dir.as_posix()}/metrics.json")
    table = one_table(markdown, f"{MODELS[model].label}: training phases")
    rows = {row[0]: row for row in table[1:]}
    for phase, block in [*((p, train[p]) for p in phases), ("best weights", train["best"])]:
        _, epochs, loss, accuracy, mae = rows[phase]
        assert same(loss, block["val_loss"])
        assert same(accuracy, block["val_gender_accuracy"])
        assert same(mae, block["val_age_mae"])
        assert int(epochs) == block.get("epochs", train["epochs"])


def test_breakdown_tables_equal_breakdown_csv(project, markdown):
    frame = pd.read_csv(project / "reports" / "eval" / "breakdown.csv")
    found = tables(markdown)["Where the models fail"]
    by_title = {table[0][0]: table for table in found}
    for kind, title in (("bucket", "age"), ("race", "race"), ("gender", "gender")):
        header, *rows = by_title[title]
        for row in rows:
            part = frame[(frame.kind == kind) & (frame.group == row[0])].set_index("model")
            assert same(row[1], part.n.iloc[0])
            for model in MODELS:
                assert same(row[header.index(f"MAE {MODELS[model].short}")], part.age_mae[model])
                cell = row[header.index(f"accuracy {MODELS[model].short}")]
                assert same(cell, part.gender_accuracy[model])


def test_winner_sentences_follow_the_numbers(project, markdown):
    metrics = read_json(project, "reports/eval/scores_flip.json")
    focus = "test" if metrics["model_a"]["test"]["n"] else "val"
    values = {m: metrics[m][focus]["age_mae"] for m in MODELS}
    best = min(values.values())
    line = next(line for line in markdown.splitlines() if line.startswith("- Age: "))
    winners = [MODELS[m].name for m in MODELS if values[m] == best]
    if len(winners) < len(values):
        assert line.startswith(f"- Age: {winners[0]} has the best age MAE")
        assert line.count("95 % interval") == len(values) - 1  # every gap has its interval


def test_markdown_holds_no_face_pixels(project, markdown):
    assert "data:image" not in markdown
    assert "worst_faces.png" not in markdown
    assert not re.search(r"[A-Za-z0-9+/]{200,}", markdown)  # no inline base64 of any kind
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        assert (project / "reports" / target).is_file(), target


def test_html_is_self_contained(project, page):
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page and "@font-face" not in page
    assert "<link" not in page and "<script" not in page
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page)
    assert references
    for ref in references:
        assert ref.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,", "#")), ref
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(list((project / "reports" / "figures").glob("*.png")))
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    charts = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', page)
    assert len(charts) == len(list((project / "reports" / "charts").glob("*.svg"))) > 0
    for data in charts:
        assert ElementTree.fromstring(base64.b64decode(data)).tag.endswith("svg")
    assert "largest age errors" in page  # the thumbnails: in the HTML only
    ids = set(re.findall(r'id="([^"]+)"', page))
    assert all(ref[1:] in ids for ref in references if ref.startswith("#"))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_html_opens_in_chromium_and_screenshots(project, tmp_path):
    shots = tmp_path / "shots"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "screenshot.py"),
            str(project / "reports" / "report.html"),
            "--out",
            str(shots),
            "--browser",
            str(CHROMIUM),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("top", "middle", "end"):
        pixels = np.asarray(Image.open(shots / f"{name}.png").convert("L"))
        assert pixels.shape[1] == 1280 and pixels.shape[0] > 100
        assert pixels.min() < 128, f"{name}.png is blank"


def test_missing_input_is_one_clear_error(small_pipeline, tmp_path, monkeypatch):
    shutil.copytree(small_pipeline, tmp_path / "p")
    (tmp_path / "p" / "reports" / "eval" / "scores_flip.json").unlink()
    monkeypatch.chdir(tmp_path / "p")
    with pytest.raises(
        UserError, match=r"reports/eval/scores_flip.json: not found; run `dvc repro"
    ):
        report.main()
    assert not Path("reports/report.md").exists()


# --- pieces, without the pipeline ----------------------------------------------------------------


def scores(accuracy: float | None, mae: float | None) -> dict:
    return {"test": {"gender_accuracy": accuracy, "age_mae": mae, "n": 10}}


def test_winner_sentence_names_the_winner_and_the_margins_with_intervals():
    metrics = {
        "model_a": scores(0.9, 6.5),
        "model_b": scores(0.92, 5.25),
        "ensemble": scores(0.92, 5.5),
    }
    differences = {
        "model_b - model_a": {"age_mae": {"value": -1.25, "low": -1.5, "high": -1.0}},
        "ensemble - model_b": {"age_mae": {"value": 0.25, "low": -0.1, "high": 0.6}},
    }
    age = winner_sentence(metrics, "test", "age_mae", "Age", differences)
    assert age.startswith("Age: model B has the best age MAE on the test split, 5.250 years")
    assert "model A by 1.250 years (6.500, 95 % interval +1.00 to +1.50 years)" in age
    assert "the ensemble by 0.250 years (5.500, 95 % interval -0.10 to +0.60 years, " in age
    assert "indistinguishable on this split)" in age
    gender = winner_sentence(metrics, "test", "gender_accuracy", "Gender")
    assert "model A by 2.00 points (90.00%, no interval)" in gender  # never a bare winner


def test_a_lead_in_accuracy_is_stated_with_the_interval_of_the_lead():
    metrics = {
        "model_a": scores(0.9, 6.0),
        "model_b": scores(0.94, 5.0),
        "ensemble": scores(0.93, 5.5),
    }
    differences = {
        "model_b - model_a": {"gender_accuracy": {"value": 0.04, "low": 0.03, "high": 0.05}},
        "ensemble - model_b": {"gender_accuracy": {"value": -0.01, "low": -0.02, "high": 0.005}},
    }
    gender = winner_sentence(metrics, "test", "gender_accuracy", "Gender", differences)
    assert "model A by 4.00 points (90.00%, 95 % interval +3.00 to +5.00 points)" in gender
    assert "ensemble by 1.00 points (93.00%, 95 % interval -0.50 to +2.00 points, " in gender


def test_ensemble_sentence_states_the_interval_of_its_change():
    metrics = {
        "model_a": scores(0.9, 6.0),
        "model_b": scores(0.94, 5.0),
        "ensemble": scores(0.94, 4.96),
    }
    differences = {
        "ensemble - model_b": {
            "age_mae": {"value": -0.04, "low": -0.09, "high": -0.01},
            "gender_accuracy": {"value": 0.0, "low": -0.002, "high": 0.002},
        }
    }
    text = ensemble_sentence(metrics, "test", differences)
    assert "lowers the age MAE by 0.040 years relative to the better single model " in text
    assert "(95 % interval -0.09 to -0.01 years)" in text
    assert "(95 % interval -0.20 to +0.20 points, indistinguishable on this split)." in text


INTERVAL = re.compile(r"95 % interval ([+-]\d+\.\d+) to ([+-]\d+\.\d+)")
VERB = re.compile(r"\b(leads|lowers|raises|changes|leaves)\b")


def stated_claims(text: str) -> list[tuple[str, float, float, float]]:
    """(sentence part, the difference it states, the interval's ends) for every comparison
    in a report: a lead and a rise are positive, a fall negative. "it leads X by 1 (...) and
    Y by 2 (...)": the second part keeps the verb of the first."""
    claims = []
    for line in text.splitlines():
        verb, start = None, 0
        for found in INTERVAL.finditer(line):
            part = line[start : found.start()]
            verb = (VERB.findall(part) or [verb])[-1]
            values = re.findall(r"\bby ([+-]?\d+\.\d+)", part)
            if values:
                stated = float(values[-1]) * (-1 if verb == "lowers" else 1)
            elif "unchanged" in part:
                stated = 0.0
            else:
                continue  # an interval with no stated difference (a table's note)
            claims.append((part, stated, float(found[1]), float(found[2])))
            start = found.end()
    return claims


# the sample report needs the small pipeline (a minute): slow, as its fixture makes every test
@pytest.mark.parametrize("which", ["committed", pytest.param("sample", marks=pytest.mark.slow)])
def test_every_stated_difference_lies_in_its_stated_interval(which, request):
    """Read as a user reads: a sentence that says "leads by 4.18 points (95 % interval -5.00
    to -3.42)" contradicts itself; every comparison's interval must hold what it states."""
    if which == "committed":
        text = (ROOT / "reports" / "report.md").read_text()
    else:
        text = request.getfixturevalue("markdown")
    claims = stated_claims(text)
    assert len(claims) >= 8, claims  # the leads, the ensemble's two changes, flip averaging
    for part, stated, low, high in claims:
        assert low - 0.006 <= stated <= high + 0.006, part
    assert text.count("(") == text.count(")")


def test_winner_sentence_with_a_full_tie_or_no_values():
    tie = {m: scores(0.5, 3.0) for m in MODELS}
    assert "all models reach the same age MAE" in winner_sentence(tie, "test", "age_mae", "Age")
    empty = {m: scores(None, None) for m in MODELS}
    assert winner_sentence(empty, "test", "age_mae", "Age") == "Age: no age MAE on the test split."


def test_formats_keep_every_digit_of_metrics_json():
    assert fmt(0.8765, "pct") == "87.65%" and number("87.65%") == pytest.approx(0.8765)
    assert fmt(5.123, "3f") == "5.123" and fmt(None, "3f") == "–"
    assert fmt(12345, "int") == "12,345"
    assert fmt_gap(-0.0125, "pct") == "-1.25 pts" and fmt_gap(0.5, "3f") == "+0.500"


def test_markdown_and_html_come_from_the_same_blocks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figure = tmp_path / "reports" / "figures" / "x.png"
    figure.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4), "red").save(figure)
    blocks = [
        Heading(1, "Title <1>"),
        Heading(2, "Part"),
        Text("a `code` span & more"),
        Table(["name", "value"], [["a|b", "1.50%"], ["c", "–"]]),
        Figure(FIGURE_DIR / "x.png", "everyone"),
        Figure(FIGURE_DIR / "x.png", "faces", only="html"),
        Text("markdown only", only="markdown"),
    ]
    md = to_markdown(blocks)
    assert "| a\\|b | 1.50% |" in md and "| --- | ---: |" in md
    assert "![everyone](figures/x.png)" in md and "faces" not in md
    assert "markdown only" in md
    page = to_html(blocks, "Title <1>")
    assert "<title>Title &lt;1&gt;</title>" in page
    assert "<code>code</code> span &amp; more" in page
    assert page.count("data:image/png;base64,") == 2 and "markdown only" not in page
    assert "<td class=num>1.50%</td>" in page and '<a href="#1-part">' in page


def test_lock_rows_list_data_and_model_hashes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n"
        "  prepare:\n    deps:\n    - path: data/raw/x.tar.gz\n      md5: aaa\n      size: 10\n"
        "    - path: stages/prepare.py\n      md5: bbb\n"
        "    outs:\n    - path: data/prepared/train.npz\n      md5: ccc\n      size: 20\n"
        "  train_a:\n    deps:\n    - path: data/prepared/train.npz\n      md5: ccc\n"
        "    outs:\n    - path: models/age_gender_A.keras\n      md5: ddd\n      size: 30\n"
    )
    rows = lock_rows()
    assert [r[0] for r in rows] == [
        "`data/raw/x.tar.gz`",
        "`data/prepared/train.npz`",
        "`models/age_gender_A.keras`",
    ]
    assert rows[2] == ["`models/age_gender_A.keras`", "output of train_a", "`ddd`", "30"]


def test_reproduce_names_what_the_bytes_depend_on_and_nothing_that_varies(project, markdown):
    """The CPU, threads and versions decide the bytes; the commit (unknown before committing),
    the core count and wall times do not, and an output that held them changed every rerun."""
    environment = read_json(project, "reports/eval/environment.json")
    assert "cores" not in environment and "numpy" in environment["packages"]
    assert environment["threads"] >= 1
    assert (
        environment["cpu"] in markdown and f"numpy {environment['packages']['numpy']}" in markdown
    )
    assert "Git commit" not in markdown and "images/s" not in markdown
    for name in ("train_a", "train_b"):
        summary = read_json(project, f"reports/{name}/metrics.json")
        assert "seconds" not in json.dumps(summary) and "hardware" not in json.dumps(summary)
        times = read_json(project, f"reports/times/{name}.json")
        assert times["cores"] >= 1 and all(
            block["seconds"] > 0 for key, block in times.items() if isinstance(block, dict)
        )


def test_a_third_model_in_the_registry_reaches_every_table(monkeypatch):
    """Adding a model is one entry in layout.MODELS: the report's comparison, flip and
    winner tables, the README's results table and reports/metrics.json all pick it up."""
    from agegender import layout
    from agegender.evaluate.metrics import compared
    from agegender.metric_table import SCORES as ALL
    from agegender.report.comparison import comparison_table, flip_table
    from scripts import readme_results

    third = layout.Model("model_c", "Model C", "model C", "C", "C", "#9467bd")
    monkeypatch.setitem(layout.MODELS, third.key, third)  # the one dict every module reads
    block = {s.key: 0.5 for s in ALL} | {"n": 10, "age_mae": 4.0, "gender_accuracy": 0.99}
    scores_ = {key: {split: dict(block) for split in SPLITS} for key in layout.MODELS}
    scores_[MODELS["model_a"].key]["test"] = block | {"age_mae": 7.0, "gender_accuracy": 0.8}

    table = comparison_table(scores_, "test")
    assert [row[0] for row in table.rows] == ["Model A", "Model B", "Ensemble", "Model C"]
    assert {row[0] for row in flip_table({True: scores_, False: scores_}, "test", True).rows} >= {
        "Model C"
    }
    assert "model C" in winner_sentence(scores_, "test", "gender_accuracy", "Gender")
    assert compared(scores_)["C"] == {"val_acc": 0.99, "val_mae": 4.0, "test_acc": 0.99,
                                      "test_mae": 4.0}  # fmt: skip
    readme = readme_results.table(scores_, P.load(ROOT / "params.yaml"))
    assert "| Model C | test | 99.0% | 4.00 |" in readme


def test_report_says_when_train_took_every_face_and_when_a_was_resized(tmp_path):
    import dataclasses

    from agegender.report.data_section import sampling_sentence
    from agegender.report.document import Table
    from agegender.report.setup import setup_a
    from tests.test_models import small_params

    params = small_params(tmp_path)
    splits = {"train": {"n": 900}, "val": {"n": 100}, "test": {"n": 100}, "unused": {"n": 0}}
    full = dataclasses.replace(params.data, train_all=True)
    assert "the 700 usable faces left over join train (`data.train_all`)" in sampling_sentence(
        splits, full, 0
    )
    assert "0 usable faces are left unused" in sampling_sentence(splits, params.data, 0)

    def rows(model_a) -> dict:
        table = next(b for b in setup_a(model_a, [], {}) if isinstance(b, Table))
        return {row[0]: row[1] for row in table.rows}

    resized = dataclasses.replace(params.model_a, progressive=[16, 24])
    assert rows(resized)["progressive resizing"].startswith("16, 24 px, then full size")
    assert "progressive resizing" not in rows(params.model_a)


def test_the_shift_section_tables_every_shift_and_says_when_it_is_stale(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports" / "charts").mkdir(parents=True)
    row = {"n": 10, "coverage": 0.7, "mean_width": 12.0, "age_mae": 5.0,
           "mean_signed_error": -2.0, "gender_accuracy": 0.9}  # fmt: skip
    shifts = {
        "level": 0.8,
        "model_md5": {"model_a": "a", "model_b": "b"},
        "shifts": {
            name: {"note": f"note {name}", "models": dict.fromkeys(MODELS, row)}
            for name in ("utkface_test", "aaf_train_2000")
        },
    }
    blocks = shift_section(shifts, {"model_a": "a", "model_b": "changed"})
    (table,) = [b for b in blocks if isinstance(b, Table)]
    assert [r[0] for r in table.rows] == ["note utkface_test", "note aaf_train_2000"]
    assert table.rows[0][2] == "70.00%" and "-2.00" in table.rows[0]
    texts = " ".join(b.text for b in blocks if isinstance(b, Text))
    assert "model_b changed since" in texts and "model_a changed" not in texts
    assert (tmp_path / "reports" / "charts" / "shift_coverage.svg").is_file()
