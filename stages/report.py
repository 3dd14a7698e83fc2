"""Stage `report`: the pipeline's outputs -> reports/report.md and a self-contained report.html.

Both documents are rendered from one list of blocks, so they cannot disagree, and every
number and every comparative sentence is computed from the files the other stages wrote.
Face thumbnails (UTKFace pixels) go only into the HTML and reports/figures, which DVC
caches: report.md is committed to git and must never hold a face.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure as MplFigure  # no pyplot: no global state, no GUI backend

from stages import params as P
from stages.backbones import BACKBONES
from stages.errors import UserError, atomic_path, run, write_text
from stages.utkface import AGE_BUCKETS, MAX_AGE, RACES

REPORT_MD = Path("reports/report.md")
REPORT_HTML = Path("reports/report.html")
FIGURES = Path("reports/figures")
SUMMARY = Path("data/prepared/summary.json")
METRICS = Path("reports/metrics.json")
OTHER_TTA = Path("reports/eval/other_tta.json")
BREAKDOWN = Path("reports/eval/breakdown.csv")
PREDICTIONS = Path("reports/eval/predictions.csv")
LOCK = Path("dvc.lock")
TRAIN_DIRS = {"model_a": Path("reports/train_a"), "model_b": Path("reports/train_b")}
MODEL_FILES = {"model_a": "models/age_gender_A.keras", "model_b": "models/age_gender_B.keras"}
STAGE_OF = {"model_a": "train_a", "model_b": "train_b"}
MODELS = ("model_a", "model_b", "ensemble")
NAMES = {"model_a": "model A", "model_b": "model B", "ensemble": "the ensemble"}
SHORT = {"model_a": "A", "model_b": "B", "ensemble": "ensemble"}
LABELS = {"model_a": "Model A", "model_b": "Model B", "ensemble": "Ensemble"}  # tables, figures
SPLITS = ("train", "val", "test")
SPLIT_NAMES = ("train", "val", "test", "unused")

# metrics.json key, table label, format. The formats keep every digit metrics.json has,
# so the tables can be parsed back and compared exactly (tests/test_report.py does).
SCORES = (
    ("gender_accuracy", "gender accuracy", "pct"),
    ("gender_f1", "gender F1 (female)", "4f"),
    ("gender_auc", "gender ROC AUC", "4f"),
    ("age_mae", "age MAE (years)", "3f"),
    ("age_rmse", "age RMSE (years)", "3f"),
    ("age_within_5", "age within 5 years", "pct"),
    ("n", "faces", "int"),
)
LOWER_IS_BETTER = {"age_mae", "age_rmse"}
SENTENCE = {  # metrics.json key: name in a sentence, unit of a difference, its decimals
    "gender_accuracy": ("gender accuracy", " points", 2),
    "gender_auc": ("gender ROC AUC", "", 4),
    "age_mae": ("age MAE", " years", 3),
    "age_within_5": ("share of ages within 5 years", " points", 2),
}
CURVES = (  # DVCLive metric file, panel title; one 2x2 figure per model
    ("gender_loss", "gender loss (binary cross-entropy)"),
    ("gender_accuracy", "gender accuracy"),
    ("age_loss", "age loss"),
    ("age_mae", "age MAE (years)"),
)
COLORS = {
    "model_a": "#1f77b4",
    "model_b": "#d62728",
    "ensemble": "#2ca02c",
    "train": "#1f77b4",
    "val": "#ff7f0e",
    "test": "#2ca02c",
    "unused": "#9e9e9e",
}
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "savefig.dpi": 110,
    "savefig.bbox": "tight",
}
SMALL_GROUP = 30  # below this many faces a group's score is mostly noise
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif;
  color: #222; background: #fff; margin: 0; line-height: 1.5; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 4rem; }
h1 { font-size: 1.8rem; border-bottom: 2px solid #333; padding-bottom: .3rem; }
h2 { font-size: 1.4rem; margin-top: 2.5rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1rem; margin-top: 1.8rem; }
nav { background: #f5f7fa; border: 1px solid #dde; padding: .5rem 1.2rem; }
nav ul { margin: .3rem 0; padding-left: 1rem; list-style: none; }
a { color: #1a56a8; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccd; padding: .25rem .6rem; vertical-align: top; }
th { background: #eef1f6; text-align: left; }
tr:nth-child(even) td { background: #fafbfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, summary { font-size: .9rem; color: #555; }
details { margin: 1rem 0; }
details img { max-width: 100%; height: auto; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; font-size: .9em; }
pre { background: #f6f8fa; border: 1px solid #dde; padding: .8rem; overflow-x: auto;
  font-size: .85rem; line-height: 1.35; }
pre code { background: none; padding: 0; }
footer { margin-top: 3rem; color: #777; font-size: .85rem; }
"""


# --- the document: blocks rendered to both Markdown and HTML ---------------------------------


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Text:
    text: str  # one paragraph; `code` spans allowed
    only: str = ""  # "markdown" or "html" to show it in one document only


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    only: str = ""


@dataclass
class Figure:
    path: Path  # the PNG under reports/figures
    caption: str
    only: str = ""  # "html" for face thumbnails: they never go into report.md
    folded: bool = False  # HTML: shown full size on a click (tall layer graphs)


@dataclass
class Code:
    text: str


Block = Heading | Text | Bullets | Table | Figure | Code
NUMERIC = re.compile(r"^[-+]?[\d,]*\.?\d+(%| pts| s| years)?$|^–$")


def visible(blocks: list[Block], target: str) -> Iterator[tuple[int, Block]]:
    """The blocks `target` shows, each with the current figure number.

    Every figure counts, shown or not, so Markdown and HTML number figures alike.
    """
    number = 0
    for block in blocks:
        if isinstance(block, Figure):
            number += 1
        if getattr(block, "only", "") in ("", target):
            yield number, block


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def numeric_columns(table: Table) -> list[bool]:
    """Right-align a column when every cell is a number (or the missing-value dash)."""
    columns = [[row[i] for row in table.rows if row[i]] for i in range(len(table.header))]
    return [bool(cells) and all(NUMERIC.match(c) for c in cells) for cells in columns]


def md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for number, block in visible(blocks, "markdown"):
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Text):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            align = ["---:" if num else "---" for num in numeric_columns(block)]
            lines = [block.header, align, *block.rows]
            out.append("\n".join("| " + " | ".join(map(md_cell, row)) + " |" for row in lines))
        elif isinstance(block, Figure):
            target = block.path.relative_to(REPORT_MD.parent).as_posix()
            out.append(f"![{block.caption}]({target})\n\n*Figure {number}. {block.caption}*")
        elif isinstance(block, Code):
            out.append(f"```\n{block.text.rstrip()}\n```")
    return "\n\n".join(out) + "\n"


def inline_html(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_table(table: Table) -> str:
    nums = numeric_columns(table)

    def row(cells: list[str], tag: str) -> str:
        return (
            "<tr>"
            + "".join(
                f"<{tag}{' class=num' if num else ''}>{inline_html(c)}</{tag}>"
                for c, num in zip(cells, nums, strict=True)
            )
            + "</tr>"
        )

    body = "\n".join(row(r, "td") for r in table.rows)
    return f"<table>\n<thead>{row(table.header, 'th')}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def to_html(blocks: list[Block], title: str) -> str:
    """One file, no external reference: CSS inline, figures as data URIs, no scripts."""
    parts: list[str] = []
    contents = [b.text for b in blocks if isinstance(b, Heading) and b.level == 2]
    for number, block in visible(blocks, "html"):
        if isinstance(block, Heading):
            parts.append(
                f'<h{block.level} id="{slug(block.text)}">{inline_html(block.text)}'
                f"</h{block.level}>"
            )
            if block.level == 1:
                links = "".join(
                    f'<li><a href="#{slug(t)}">{inline_html(t)}</a></li>' for t in contents
                )
                parts.append(f"<nav><strong>Contents</strong><ul>{links}</ul></nav>")
        elif isinstance(block, Text):
            parts.append(f"<p>{inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append(
                "<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in block.items) + "</ul>"
            )
        elif isinstance(block, Table):
            parts.append(html_table(block))
        elif isinstance(block, Figure):
            caption = html.escape(block.caption)
            image = f'<img src="{data_uri(block.path)}" alt="{caption}">'
            label = f"Figure {number}. {caption}"
            if block.folded:
                parts.append(
                    f'<details id="figure-{number}"><summary>{label} (click to show)</summary>'
                    f"{image}</details>"
                )
            else:
                parts.append(
                    f'<figure id="figure-{number}">{image}<figcaption>{label}</figcaption></figure>'
                )
        elif isinstance(block, Code):
            parts.append(f"<pre><code>{html.escape(block.text.rstrip())}</code></pre>")
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n"
        '<footer id="end">Generated by <code>python -m stages.report</code> from the outputs '
        "of the DVC pipeline; self-contained, opens offline.</footer>\n</main>\n</body>\n</html>\n"
    )


# --- reading the pipeline's outputs ------------------------------------------------------------


def read_json(path: Path, stage: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: not found; run `dvc repro {stage}` (or `dvc pull`) first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error}); rerun `dvc repro {stage}`") from None


def read_csv(path: Path, stage: str) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: not found; run `dvc repro {stage}` (or `dvc pull`) first")
    return pd.read_csv(path)


def read_curve(folder: Path, name: str) -> pd.DataFrame | None:
    """One DVCLive series (columns step and `name`), or None when it was not logged."""
    path = folder / "plots" / "metrics" / f"{name}.tsv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, sep="\t")
    return frame if name.split("/")[-1] in frame and len(frame) else None


def phase2_start(folder: Path) -> int | None:
    """The first DVCLive step of phase 2, or None (model A, or phase 2 had no epochs)."""
    phases = read_curve(folder, "phase")
    if phases is None:
        return None
    steps = phases.step[phases.phase == 2]
    return int(steps.min()) if len(steps) else None


def focus_split(metrics: dict) -> str:
    """The split evaluate's breakdowns describe: test, or val when there is no test split."""
    return "test" if (metrics["model_a"].get("test") or {}).get("n") else "val"


# --- formatting --------------------------------------------------------------------------------


def fmt(value: float | int | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    return f"{value:.{kind}}"


def fmt_gap(value: float | None, kind: str) -> str:
    """A signed difference: percentage points for rates, the metric's unit otherwise."""
    if value is None or kind == "int":
        return "–" if value is None else ""
    if kind == "pct":
        return f"{100 * value:+.2f} pts"
    return f"{value:+.{kind}}"


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value:.0f} s ({value / 60:.1f} min)"


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- figures -----------------------------------------------------------------------------------


def save(figure: MplFigure, name: str) -> Path:
    path = FIGURES / f"{name}.png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
    return path


def age_histogram_figure(summary: dict) -> Path:
    figure = MplFigure(figsize=(8.5, 3.6))
    ax = figure.subplots()
    splits = [s for s in SPLIT_NAMES if summary["splits"].get(s, {}).get("n")]
    width = 0.8 / max(len(splits), 1)
    x = np.arange(len(AGE_BUCKETS))
    for i, name in enumerate(splits):
        block = summary["splits"][name]
        counts = np.array([block["age_histogram"].get(b, 0) for b in AGE_BUCKETS])
        ax.bar(
            x + (i - (len(splits) - 1) / 2) * width,
            100 * counts / block["n"],
            width,
            color=COLORS[name],
            label=f"{name} (n={block['n']:,})",
        )
    ax.set_xticks(x, AGE_BUCKETS)
    ax.set_xlabel("true age (years)")
    ax.set_ylabel("share of the split (%)")
    ax.set_title("Age distribution per split")
    ax.legend()
    return save(figure, "age_histogram")


def curves_figure(key: str, title: str, age_loss: str, phase2: int | None) -> Path:
    """Train and val on the four curves; epochs count from 1, phase 2 marked for model B."""
    folder = TRAIN_DIRS[key]
    figure = MplFigure(figsize=(10, 6.6), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True).ravel()
    for ax, (name, label) in zip(axes, CURVES, strict=True):
        label = f"age loss ({age_loss})" if name == "age_loss" else label
        for split in ("train", "val"):
            frame = read_curve(folder, f"{split}/{name}")
            if frame is not None:
                ax.plot(
                    frame.step + 1,
                    frame[name],
                    marker="o",
                    markersize=3,
                    color=COLORS[split],
                    label=split,
                )
        if phase2 is not None:
            ax.axvline(
                phase2 + 0.5, color="#555", linestyle="--", linewidth=1, label="phase 2 starts"
            )
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend()
    figure.suptitle(f"{title}: learning curves")
    return save(figure, f"curves_{key}")


def buckets_figure(frame: pd.DataFrame, focus: str) -> Path:
    figure = MplFigure(figsize=(11, 3.8), layout="constrained")
    axes = figure.subplots(1, 2)
    rows = frame[frame.kind == "bucket"]
    buckets = [b for b in AGE_BUCKETS if b in set(rows.group)]
    x = np.arange(len(buckets))
    models = [m for m in MODELS if m in set(rows.model)]
    width = 0.8 / max(len(models), 1)
    for ax, column, label in (
        (axes[0], "age_mae", "age MAE (years)"),
        (axes[1], "gender_accuracy", "gender accuracy (%)"),
    ):
        for i, model in enumerate(models):
            part = rows[rows.model == model].set_index("group").reindex(buckets)
            scale = 100 if column == "gender_accuracy" else 1
            ax.bar(
                x + (i - (len(models) - 1) / 2) * width,
                scale * part[column],
                width,
                color=COLORS[model],
                label=LABELS[model],
            )
        ax.set_xticks(x, buckets)
        ax.set_xlabel("true age (years)")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per age bucket ({focus} split)")
    axes[0].legend()
    return save(figure, "age_buckets")


def scatter_figure(predictions: pd.DataFrame, metrics: dict, focus: str) -> Path:
    figure = MplFigure(figsize=(12, 4.2), layout="constrained")
    axes = figure.subplots(1, len(MODELS), sharex=True, sharey=True)
    top = max([predictions.age.max()] + [predictions[f"age_{m}"].max() for m in MODELS]) + 5
    for ax, model in zip(axes, MODELS, strict=True):
        ax.scatter(
            predictions.age,
            predictions[f"age_{model}"],
            s=6,
            alpha=0.35,
            color=COLORS[model],
            linewidths=0,
        )
        ax.plot([0, top], [0, top], color="#333", linewidth=1, label="perfect")
        mae = fmt(metrics[model][focus]["age_mae"], "3f")
        ax.set_title(f"{LABELS[model]} (MAE {mae} years)")
        ax.set_xlabel("true age (years)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal")
    axes[0].set_ylabel("predicted age (years)")
    axes[0].legend(loc="upper left")
    return save(figure, "age_scatter")


def worst_faces_figure(worst: pd.DataFrame, model: str, focus: str) -> Path | None:
    """Thumbnails of the largest age errors: HTML and DVC cache only, never git."""
    from stages.data import load_split

    split = load_split(focus)
    index = {str(name): i for i, name in enumerate(split.name)}
    rows = [index.get(str(name)) for name in worst["name"]]
    if not rows or None in rows:
        return None
    images = np.asarray(split.images[np.array(rows)])
    columns = min(8, len(rows))
    lines = math.ceil(len(rows) / columns)
    figure = MplFigure(figsize=(1.5 * columns, 1.85 * lines), layout="constrained")
    axes = np.atleast_1d(figure.subplots(lines, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, (_, face) in zip(axes, images, worst.iterrows(), strict=False):
        ax.imshow(image, interpolation="lanczos" if image.shape[0] < 96 else "antialiased")
        predicted = face[f"age_{model}"]
        ax.set_title(f"true {face['age']}, pred {predicted:.0f}", fontsize=8)
    figure.suptitle(f"{LABELS[model]}: the {len(rows)} largest age errors ({focus} split)")
    return save(figure, "worst_faces")


def diagram_figure(model, key: str) -> Path | None:
    """keras.utils.plot_model, only where pydot and Graphviz's `dot` are installed."""
    if importlib.util.find_spec("pydot") is None or shutil.which("dot") is None:
        return None
    import keras

    path = FIGURES / f"diagram_{key}.png"
    try:
        with atomic_path(path) as tmp:
            keras.utils.plot_model(
                model,
                to_file=str(tmp),
                show_shapes=True,
                show_layer_names=True,
                dpi=72,
                expand_nested=False,
            )
    except Exception as error:  # a missing font or a Graphviz quirk must not stop the report
        print(f"report: no diagram of {key} ({str(error).splitlines()[0][:120]})")
        return None
    return path


# --- sections ---------------------------------------------------------------------------------


def data_section(summary: dict, params: P.Params) -> list[Block]:
    status, splits = summary["status"], summary["splits"]
    present = [s for s in SPLIT_NAMES if s in splits]
    blocks: list[Block] = [
        Heading(2, "1. Data"),
        Text(
            f"The source `{summary['source']}` holds {summary['files']:,} files, of which "
            f"{status['ok']:,} ({status['ok'] / max(summary['files'], 1):.1%}) are usable "
            f"faces. Labels come from the file names (`age_gender_race_date.jpg.chip.jpg`). "
            f"{summary['malformed_names']:,} names break that pattern; "
            f"{summary['malformed_names_recovered']:,} of them still give an unambiguous age "
            f"and gender and are kept."
        ),
        Table(
            ["status", "files", "what happens to them"],
            [
                ["ok", fmt(status["ok"], "int"), "used (split below)"],
                [
                    "malformed",
                    fmt(status["malformed"], "int"),
                    "no valid age or gender in the name: dropped",
                ],
                [
                    "duplicate",
                    fmt(status["duplicate"], "int"),
                    f"byte-identical to another file with the same labels "
                    f"({plural(summary['duplicate_groups'], 'group')}): one copy kept",
                ],
                [
                    "conflict",
                    fmt(status["conflict"], "int"),
                    f"byte-identical files with different labels "
                    f"({plural(summary['conflict_groups'], 'group')}): all copies dropped",
                ],
                [
                    "unreadable",
                    fmt(status["unreadable"], "int"),
                    "cannot be decoded as an image: dropped",
                ],
                ["total", fmt(summary["files"], "int"), ""],
            ],
        ),
    ]
    odd = summary.get("malformed_name_files") or {}
    if odd:
        rows = [[f"`{name}`", problem] for name, problem in list(odd.items())[:20]]
        if len(odd) > 20:
            rows.append([f"... and {len(odd) - 20} more", "see data/prepared/faces.csv"])
        blocks += [Text("The malformed names:"), Table(["file name", "problem"], rows)]
    d = params.data
    test_note = (
        f"the test split takes {splits['test']['n']:,} of the remaining faces "
        f"(`data.test_size` = {d.test_size:,})"
        if splits.get("test", {}).get("n")
        else f"there is no test split (`data.test_size` = {d.test_size:,}), so the comparison "
        f"uses val"
    )
    blocks.append(
        Text(
            f"Train and val are a sample of `data.subset_size` = {d.subset_size:,} faces, "
            f"stratified by gender and age bucket (seed {params.seed}), {d.val_size:,} of them "
            f"for validation; {test_note}; {splits.get('unused', {}).get('n', 0):,} usable "
            f"faces are left unused. Images are resized to {d.image_size} x {d.image_size} px."
        )
    )
    races = [r for r in [*RACES, "Unknown"] if any(splits[s]["race"].get(r) for s in present)]
    rows = []
    for name in present:
        block = splits[name]
        n = max(block["n"], 1)
        rows.append(
            [
                name,
                fmt(block["n"], "int"),
                f"{100 * block['female_fraction']:.1f}%" if block["n"] else "–",
                f"{block['age_mean']:.1f}" if block["n"] else "–",
            ]
            + [
                f"{block['race'].get(r, 0):,} ({100 * block['race'].get(r, 0) / n:.1f}%)"
                for r in races
            ]
        )
    blocks += [
        Heading(3, "Split sizes, gender and race balance"),
        Table(["split", "faces", "female", "mean age", *races], rows),
        Text(balance_sentence(splits, present)),
        Figure(age_histogram_figure(summary), "Age distribution of each split, as a share of it."),
        Text(stratification_sentence(splits)),
        Table(
            ["split", *AGE_BUCKETS],
            [
                [name] + [fmt(splits[name]["age_histogram"].get(b, 0), "int") for b in AGE_BUCKETS]
                for name in present
            ],
        ),
    ]
    return blocks


def stratification_sentence(splits: dict) -> str:
    """How far each split's age distribution is from train's: the stratification, checked."""
    shares = {
        name: np.array([splits[name]["age_histogram"].get(b, 0) for b in AGE_BUCKETS])
        / splits[name]["n"]
        for name in ("train", "val", "test")
        if splits.get(name, {}).get("n")
    }
    if "train" not in shares or len(shares) < 2:
        return "There is only one split to compare."
    gaps = {
        (name, AGE_BUCKETS[int(np.argmax(np.abs(share - shares["train"])))]): float(
            np.max(np.abs(share - shares["train"]))
        )
        for name, share in shares.items()
        if name != "train"
    }
    (split, bucket), gap = max(gaps.items(), key=lambda kv: kv[1])
    return (
        f"The age buckets' shares differ from train's by at most {100 * gap:.1f} points "
        f"({split}, {bucket})."
    )


def balance_sentence(splits: dict, present: list[str]) -> str:
    used = [s for s in present if splits[s]["n"] and s != "unused"]
    if not used:
        return "No split holds any face."
    female = [splits[s]["female_fraction"] for s in used]
    train = splits[used[0]]
    races = sorted(((c, r) for r, c in train["race"].items() if r != "Unknown"), reverse=True)
    text = (
        f"Women make up {100 * min(female):.1f}% to {100 * max(female):.1f}% of each split, "
        f"and the mean age is {min(splits[s]['age_mean'] for s in used):.1f} to "
        f"{max(splits[s]['age_mean'] for s in used):.1f} years."
    )
    if len(races) >= 2:
        (most, big), (least, small) = races[0], races[-1]
        n = max(train["n"], 1)
        text += (
            f" Races are unbalanced: in {used[0]}, {big} faces are {100 * most / n:.1f}% and "
            f"{small} faces {100 * least / n:.1f}%, so per-race scores below rest on very "
            f"different numbers of faces."
        )
    return text


def layer_shape(layer) -> str:
    """Output shape without the batch axis, as the layer is used in this model.

    A nested backbone built for any input size reports (None, None, None, C) on its own;
    the inbound node has the shape it actually produces here.
    """
    try:
        nodes = getattr(layer, "_inbound_nodes", None)
        tensor = nodes[0].output_tensors[0] if nodes else layer.output
        shape = tuple(tensor.shape)[1:]
    except Exception:
        return "?"
    return " x ".join("?" if s is None else str(s) for s in shape) or "scalar"


def architecture(model, key: str) -> list[Block]:
    rows = [
        [
            f"`{layer.name}`",
            type(layer).__name__,
            layer_shape(layer),
            fmt(layer.count_params(), "int"),
        ]
        for layer in model.layers
    ]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = model.count_params()
    blocks: list[Block] = [
        Heading(3, f"{capital(NAMES[key])}: architecture"),
        Text(
            f"{total:,} parameters, {trainable:,} of them trainable in the saved model and "
            f"{total - trainable:,} frozen (BatchNorm statistics, frozen layers and the fixed "
            f"weights that turn an age distribution into its mean). Output shapes leave out "
            f"the batch axis."
        ),
        Table(["layer", "type", "output shape", "parameters"], rows),
    ]
    diagram = diagram_figure(model, key)
    if diagram is not None:
        caption = f"{capital(NAMES[key])}: layer graph (keras plot_model); full size in {diagram}."
        blocks.append(Figure(diagram, caption, folded=True))
    return blocks


def fit_rows(fit: P.Fit) -> list[tuple[str, str]]:
    schedule = (
        "cosine decay to 0"
        if fit.schedule == "cosine"
        else f"x{fit.reduce_lr_factor:g} after {fit.reduce_lr_patience} epochs without "
        f"val loss improvement"
    )
    return [
        (
            "optimizer",
            fit.optimizer + (f", weight decay {fit.weight_decay:g}" if fit.weight_decay else ""),
        ),
        (
            "learning rate",
            f"{fit.learning_rate:g}, {schedule}"
            + (f", after a {fit.warmup_epochs}-epoch linear warm-up" if fit.warmup_epochs else ""),
        ),
        (
            "epochs",
            f"up to {fit.epochs}, early stopping after {fit.early_stopping_patience} "
            f"without improvement",
        ),
        ("batch size", str(fit.batch_size)),
    ]


WARPS = {"rotation", "translation", "zoom"}


def common_rows(p: P.ModelA | P.ModelB, params: P.Params) -> list[list[str]]:
    loss, aug = p.loss, p.augment
    age_loss = (
        f"dldl (KL to a Gaussian of {loss.age_sigma:g} years around the true age + L1 of the "
        f"expectation)"
        if loss.age == "dldl"
        else loss.age
    )
    augment = [
        name
        for name in ("rotation", "translation", "zoom", "brightness", "contrast")
        if getattr(aug, name)
    ]
    augment_text = (
        ", ".join(
            (["horizontal flip"] if aug.flip else [])
            + [f"{name} {getattr(aug, name):g}" for name in augment]
            + (["(rotation, translation and zoom in one warp)"] if WARPS & {*augment} else [])
        )
        or "none"
    )
    return [
        ["input", f"{params.data.image_size} x {params.data.image_size} RGB, uint8 pixels"],
        [
            "loss",
            f"{loss.gender_weight:g} x gender binary cross-entropy (label smoothing "
            f"{loss.label_smoothing:g}) + {loss.age_weight:g} x age {age_loss}",
        ],
        [
            "age head",
            f"mean of a softmax over ages 0-{MAX_AGE}"
            if p.age_head == "expectation"
            else "one linear unit",
        ],
        ["augmentation (training only)", augment_text],
        ["seed, deterministic ops", f"{params.seed}, {str(params.train.deterministic).lower()}"],
    ]


def setup_a(params: P.Params, train: dict) -> list[Block]:
    p = params.model_a
    rows = [
        [
            "trunk",
            f"stem conv (stride {min(p.stem_stride, 2)}"
            f"{', then 2x2 pool' if p.stem_stride == 4 else ''}), then conv blocks of "
            f"{', '.join(map(str, p.trunk_filters))} filters",
        ],
        [
            "age and gender branches",
            f"conv blocks of {', '.join(map(str, p.branch_filters))} "
            f"filters each, {p.pooling} pooling, dense {p.dense_units}",
        ],
        [
            "blocks",
            f"{p.convs_per_block} convs of {p.kernel_size}x{p.kernel_size}, "
            f"batch norm {str(p.batch_norm).lower()}, spatial dropout "
            f"{p.spatial_dropout:g}, max pool",
        ],
        ["regularisation", f"dropout {p.dropout:g}, L2 {p.l2:g}"],
        *common_rows(p, params),
        *[list(row) for row in fit_rows(p.fit)],
        ["epochs run", str(train.get("epochs", "–"))],
    ]
    return [Heading(3, "Model A: training setup"), Table(["setting", "value"], rows)]


def weights_text(weights: str | None) -> str:
    if weights == "imagenet":
        return "ImageNet (keras.applications)"
    if weights is None:
        return "none: random initialisation, no transfer learning"
    return f"file `{weights}`"


def backbone_phrase(p: P.ModelB) -> str:
    """'an ImageNet-pretrained MobileNetV2' and the like, for titles and sentences."""
    name = BACKBONES[p.backbone].application
    if p.weights == "imagenet":
        return f"an ImageNet-pretrained {name}"
    if p.weights is None:
        return f"a randomly initialised {name}"
    return f"a {name} with weights from `{p.weights}`"


def setup_b(params: P.Params, train: dict) -> list[Block]:
    p = params.model_b
    spec = BACKBONES[p.backbone]
    alpha = f", width multiplier alpha {p.alpha:g}" if spec.has_alpha else ""
    rows = [
        ["backbone", f"{spec.application} (`{p.backbone}`){alpha}, without its classifier"],
        ["backbone weights", weights_text(p.weights)],
        ["input scaling", f"`{spec.preprocess}` preprocessing, inside the model"],
        ["features", f"{p.pooling} pooling, normalisation {p.norm}, dropout {p.dropout:g}"],
        ["heads", f"age dense {p.age_units}, gender dense {p.gender_units}, dropout {p.dropout:g}"],
        *common_rows(p, params),
    ]
    unfreeze = (
        "all backbone layers"
        if p.phase2.unfreeze == "all"
        else f"the top {p.phase2.unfreeze} backbone layers"
    )
    norm = {
        "frozen": "BatchNorm frozen with ImageNet statistics",
        "adapt": "BatchNorm frozen with statistics re-estimated on the training faces",
        "train": f"BatchNorm re-estimated, then trained (momentum {p.bn_momentum:g})",
    }[p.batch_norm]
    first = "frozen" + (", heads trained on cached features" if p.phase1.cached_features else "")
    phase_rows = [["backbone", first, f"{unfreeze} trainable; {norm}"]]
    for (label, one), (_, two) in zip(fit_rows(p.phase1), fit_rows(p.phase2), strict=True):
        phase_rows.append([label, one, two])
    phase_rows.append(
        [
            "epochs run",
            str(train.get("phase1", {}).get("epochs", "–")),
            str(train.get("phase2", {}).get("epochs", "–")),
        ]
    )
    return [
        Heading(3, "Model B: training setup"),
        Table(["setting", "value"], rows),
        Text(
            "Phase 1 trains the new heads on the frozen backbone; phase 2 unfreezes the "
            "backbone and trains on at a lower learning rate. The weights kept are the best by "
            "val loss over both phases."
        ),
        Table(["", "phase 1", "phase 2"], phase_rows),
    ]


def curves_text(key: str) -> str:
    val = read_curve(TRAIN_DIRS[key], "val/loss")
    train = read_curve(TRAIN_DIRS[key], "train/age_mae")
    if val is None:
        return "No learning curves were logged."
    best = int(val.step[val.loss.idxmin()]) + 1
    text = (
        f"Val loss is lowest at epoch {best} of {len(val)} ({val.loss.min():.4f}); those "
        f"weights are the ones saved and evaluated."
    )
    vmae = read_curve(TRAIN_DIRS[key], "val/age_mae")
    if train is not None and vmae is not None:
        gap = float(vmae.age_mae.iloc[-1] - train.age_mae.iloc[-1])
        side = "above" if gap > 0 else "below"
        text += (
            f" At the last epoch val age MAE is {abs(gap):.2f} years {side} train age MAE "
            f"(train is measured with augmentation and dropout active)."
        )
    return text


def scores_table(block: dict) -> Table:
    """Metrics x splits with the val - train gap: the numbers of reports/metrics.json."""
    rows = []
    for key, label, kind in SCORES:
        values = [(block.get(s) or {}).get(key) for s in SPLITS]
        gap = "" if kind == "int" else fmt_gap(diff(values[1], values[0]), kind)
        rows.append([label, *(fmt(v, kind) for v in values), gap])
    return Table(["metric", *SPLITS, "val - train"], rows)


def gap_sentence(key: str, block: dict) -> str:
    """How much worse val is than train, per task, and what the two gaps say together."""
    train, val = block.get("train") or {}, block.get("val") or {}
    mae = diff(val.get("age_mae"), train.get("age_mae"))
    acc = diff(val.get("gender_accuracy"), train.get("gender_accuracy"))
    if mae is None or acc is None:
        return "The val - train gap needs both splits, and one of them is empty."
    worse = [task for task, gap in (("age", mae), ("gender", -acc)) if gap > 0]
    verdict = {
        0: "Neither task scores worse on val than on train: no sign of overfitting.",
        1: f"Only {worse[0] if worse else ''} scores worse on val than on train.",
        2: "Both tasks score worse on val than on train: the model fits its training faces "
        "better than unseen ones.",
    }[len(worse)]
    return (
        f"Scored the same way (no augmentation, no dropout), {NAMES[key]}'s val age MAE "
        f"differs from its train age MAE by {mae:+.3f} years and its val gender accuracy from "
        f"its train accuracy by {100 * acc:+.2f} points. {verdict}"
    )


def timing_table(train: dict, phases: list[str]) -> Table:
    rows = []
    for phase in phases:
        block = train.get(phase) or {}
        rows.append(
            [
                phase,
                str(block.get("epochs", "–")),
                seconds(block["seconds"]) if "seconds" in block else "–",
                fmt(block.get("train_images_per_second"), "1f"),
                fmt(block.get("val_loss"), "4f"),
                fmt(block.get("val_gender_accuracy"), "pct"),
                fmt(block.get("val_age_mae"), "3f"),
            ]
        )
    best = train.get("best") or {}
    rows.append(
        [
            "best weights",
            str(train.get("epochs", "–")),
            "",
            "",
            fmt(best.get("val_loss"), "4f"),
            fmt(best.get("val_gender_accuracy"), "pct"),
            fmt(best.get("val_age_mae"), "3f"),
        ]
    )
    return Table(
        [
            "phase",
            "epochs",
            "time",
            "train images/s",
            "val loss",
            "val gender accuracy",
            "val age MAE",
        ],
        rows,
    )


def model_section(
    key: str, number: int, title: str, params: P.Params, metrics: dict, train: dict
) -> list[Block]:
    from stages.models import load

    model = load(MODEL_FILES[key])
    p = params.model_a if key == "model_a" else params.model_b
    phases = ["fit"] if key == "model_a" else ["phase1", "phase2"]
    phase2 = phase2_start(TRAIN_DIRS[key]) if key == "model_b" else None
    caption = (
        f"{capital(NAMES[key])}: train and val curves per epoch (val without augmentation)."
        + (
            " The dashed line marks where phase 2 (backbone unfrozen) begins."
            if phase2 is not None
            else ""
        )
    )
    total = sum((train.get(ph) or {}).get("seconds", 0.0) for ph in phases)
    setup = setup_a(params, train) if key == "model_a" else setup_b(params, train)
    return [
        Heading(2, f"{number}. {title}"),
        *architecture(model, key),
        *setup,
        Heading(3, f"{capital(NAMES[key])}: learning curves"),
        Figure(curves_figure(key, capital(NAMES[key]), p.loss.age, phase2), caption),
        Text(curves_text(key)),
        Heading(3, f"{capital(NAMES[key])}: scores per split"),
        scores_table(metrics[key]),
        Text(gap_sentence(key, metrics[key])),
        Heading(3, f"{capital(NAMES[key])}: training time"),
        timing_table(train, phases),
        Text(
            f"Training took {seconds(total)} in all ({plural(train.get('epochs', 0), 'epoch')}) "
            f"on the machine that ran `dvc repro`; times depend on that machine."
        ),
    ]


# --- comparison and discussion -----------------------------------------------------------------


def winner_sentence(metrics: dict, focus: str, key: str, task: str) -> str:
    """Which model wins `key` on the focus split and by how much, from the numbers alone."""
    label, unit, decimals = SENTENCE[key]
    kind = next(k for name, _, k in SCORES if name == key)
    values = [(m, metrics[m][focus][key]) for m in MODELS if metrics[m][focus][key] is not None]
    if not values:
        return f"{task}: no {label} on the {focus} split."
    lower = key in LOWER_IS_BETTER
    values.sort(key=lambda mv: mv[1], reverse=not lower)
    best = values[0][1]
    winners = [NAMES[m] for m, v in values if v == best]
    if len(winners) == len(values):
        return (
            f"{task}: all models reach the same {label}, {fmt(best, kind)}, on the {focus} split."
        )
    scale = 100 if kind == "pct" else 1
    behind = [
        f"{NAMES[m]} by {abs(v - best) * scale:.{decimals}f}{unit} ({fmt(v, kind)})"
        for m, v in values[1:]
        if v != best
    ]
    verb = "is best" if len(winners) == 1 else "tie for best"
    return (
        f"{task}: {join(winners)} {verb} on the {focus} split, {label} {fmt(best, kind)}"
        f"{unit if unit == ' years' else ''}, "
        f"ahead of {join(behind)}."
    )


def change_text(change: float, unit: str, decimals: int) -> str:
    """'lowers ... by 0.120 years' style phrase for a signed change."""
    if round(change, decimals) == 0:
        return "leaves {} unchanged"
    verb = "lowers" if change < 0 else "raises"
    return f"{verb} {{}} by {abs(change):.{decimals}f} {unit}"


def ensemble_sentence(metrics: dict, focus: str) -> str:
    m = {k: metrics[k][focus] for k in MODELS}
    if any(m[k]["age_mae"] is None for k in MODELS):
        return ""
    mae = m["ensemble"]["age_mae"] - min(m["model_a"]["age_mae"], m["model_b"]["age_mae"])
    acc = m["ensemble"]["gender_accuracy"] - max(
        m["model_a"]["gender_accuracy"], m["model_b"]["gender_accuracy"]
    )
    return (
        "Averaging the two models' outputs (the ensemble) "
        + change_text(mae, "years", 3).format("the age MAE")
        + " relative to the better single model, and "
        + change_text(100 * acc, "points", 2).format("gender accuracy")
        + " relative to the more accurate one."
    )


def comparison_table(metrics: dict, focus: str) -> Table:
    rows = [
        [LABELS[m], *(fmt(metrics[m][focus][key], kind) for key, _, kind in SCORES)] for m in MODELS
    ]
    return Table(["model", *(label for _, label, _ in SCORES)], rows)


def tta_table(metrics: dict, other: dict, focus: str, flip: bool) -> Table:
    used = "with flip averaging" if flip else "without flip averaging"
    alt = "without flip averaging" if flip else "with flip averaging"
    rows = []
    for m in MODELS:
        for label, source in ((used + " (reported)", metrics), (alt, other)):
            block = (source.get(m) or {}).get(focus) or {}
            rows.append(
                [
                    LABELS[m],
                    label,
                    fmt(block.get("gender_accuracy"), "pct"),
                    fmt(block.get("age_mae"), "3f"),
                ]
            )
    return Table(["model", "prediction", "gender accuracy", "age MAE (years)"], rows)


def tta_sentence(metrics: dict, other: dict, focus: str, flip: bool) -> str:
    now = metrics["ensemble"][focus]
    alt = (other.get("ensemble") or {}).get(focus) or {}
    if now.get("age_mae") is None or alt.get("age_mae") is None:
        return ""
    on, off = (now, alt) if flip else (alt, now)
    mae, acc = on["age_mae"] - off["age_mae"], on["gender_accuracy"] - off["gender_accuracy"]
    return (
        f"Averaging each prediction with that of the mirrored face changes the ensemble's "
        f"age MAE by {mae:+.3f} years and its gender accuracy by {100 * acc:+.2f} points "
        f"(`evaluate.flip_tta` is {str(flip).lower()}: the scores above are "
        f"{'with' if flip else 'without'} it)."
    )


def group_table(frame: pd.DataFrame, kind: str, title: str) -> Table:
    rows = frame[frame.kind == kind]
    groups = list(dict.fromkeys(rows.group))
    models = [m for m in MODELS if m in set(rows.model)]
    table = []
    for group in groups:
        part = rows[rows.group == group].set_index("model")
        n = int(part.n.iloc[0])
        table.append(
            [group, fmt(n, "int")]
            + [fmt(part.age_mae.get(m), "3f") for m in models]
            + [fmt(part.gender_accuracy.get(m), "pct") for m in models]
        )
    header = [
        title,
        "faces",
        *(f"MAE {SHORT[m]}" for m in models),
        *(f"accuracy {SHORT[m]}" for m in models),
    ]
    return Table(header, table)


def failure_sentences(frame: pd.DataFrame) -> list[str]:
    """Each model's worst age bucket and its spread across races, from breakdown.csv."""
    items = []
    for model in MODELS:
        rows = frame[frame.model == model]
        buckets = rows[rows.kind == "bucket"].dropna(subset=["age_mae"])
        races = rows[(rows.kind == "race") & (rows.group != "Unknown")]
        if buckets.empty:
            continue
        worst, best = buckets.loc[buckets.age_mae.idxmax()], buckets.loc[buckets.age_mae.idxmin()]
        acc = buckets.loc[buckets.gender_accuracy.idxmin()]
        text = (
            f"{capital(NAMES[model])}: age is worst in the {worst.group} bucket (MAE "
            f"{worst.age_mae:.2f} years, {worst.n} faces) and best in {best.group} "
            f"({best.age_mae:.2f}); gender is least accurate in {acc.group} "
            f"({100 * acc.gender_accuracy:.1f}%)."
        )
        if len(races) >= 2:
            hi, lo = races.loc[races.age_mae.idxmax()], races.loc[races.age_mae.idxmin()]
            ahi = races.loc[races.gender_accuracy.idxmax()]
            alo = races.loc[races.gender_accuracy.idxmin()]
            text += (
                f" Across races, age MAE runs from {lo.age_mae:.2f} ({lo.group}) to "
                f"{hi.age_mae:.2f} ({hi.group}), {hi.age_mae - lo.age_mae:.2f} years apart, and "
                f"gender accuracy from {100 * alo.gender_accuracy:.1f}% ({alo.group}) to "
                f"{100 * ahi.gender_accuracy:.1f}% ({ahi.group})."
            )
        items.append(text)
    small = frame[(frame.kind != "gender") & (frame.group != "Unknown")].n
    if len(small) and small.min() < SMALL_GROUP:
        items.append(
            f"Some groups are small (as few as {int(small.min())} faces), so differences "
            f"between them of a few points or years can be noise."
        )
    return items


def cost_sentence(trains: dict) -> str:
    a, b = trains["model_a"], trains["model_b"]
    time_a = (a.get("fit") or {}).get("seconds", 0.0)
    time_b = sum((b.get(ph) or {}).get("seconds", 0.0) for ph in ("phase1", "phase2"))
    pa, pb = a.get("parameters"), b.get("parameters")
    if not (pa and pb and time_a and time_b):
        return ""
    return (
        f"Cost: model B has {pb:,} parameters, {pb / pa:.1f} times model A's {pa:,}, and "
        f"trained in {seconds(time_b)} against {seconds(time_a)} for model A "
        f"({time_b / time_a:.1f} times as long)."
    )


def best_age_model(metrics: dict, focus: str) -> str:
    values = [
        (metrics[m][focus]["age_mae"], i, m)
        for i, m in enumerate(MODELS)
        if metrics[m][focus]["age_mae"] is not None
    ]
    return min(values)[2] if values else "ensemble"


def worst_faces_blocks(
    predictions: pd.DataFrame, metrics: dict, focus: str, count: int
) -> list[Block]:
    if count == 0 or predictions.empty:
        return []
    model = best_age_model(metrics, focus)
    error = (predictions[f"age_{model}"] - predictions.age).abs()
    worst = predictions.assign(error=error).nlargest(count, "error")
    path = worst_faces_figure(worst, model, focus)
    if path is None:
        return []
    rows = [
        [f"`{r['name']}`", str(r["age"]), f"{r[f'age_{model}']:.1f}", f"{r['error']:.1f}"]
        for _, r in worst.iterrows()
    ]
    return [
        Heading(3, "Worst age predictions"),
        Text(
            f"The {len(worst)} faces of the {focus} split with the largest age errors of "
            f"{NAMES[model]} (the best model on age) are shown in report.html only: UTKFace "
            f"images never enter git, and report.md is committed. The thumbnails are in "
            f"reports/figures, which DVC caches.",
            only="markdown",
        ),
        Text(
            f"The {len(worst)} faces of the {focus} split with the largest age errors of "
            f"{NAMES[model]}, the best model on age. This figure is kept out of report.md "
            f"(committed to git); UTKFace images are for non-commercial research only.",
            only="html",
        ),
        Figure(path, f"The largest age errors of {NAMES[model]} ({focus} split).", only="html"),
        Table(["file", "true age", "predicted", "error (years)"], rows, only="html"),
    ]


def scope_sentence(metrics: dict, focus: str) -> str:
    n = metrics["model_a"][focus]["n"]
    if focus == "test":
        return (
            f"All scores in this section are on the test split ({n:,} faces), which no "
            f"model trained or early-stopped on."
        )
    return (
        f"All scores in this section are on the val split ({n:,} faces): there is no test "
        f"split, and val chose the saved epochs, so these scores are slightly optimistic."
    )


def comparison_section(
    params: P.Params,
    metrics: dict,
    other: dict,
    trains: dict,
    breakdown: pd.DataFrame,
    predictions: pd.DataFrame,
) -> list[Block]:
    focus = focus_split(metrics)
    frame = breakdown[breakdown.split == focus] if "split" in breakdown else breakdown
    blocks: list[Block] = [
        Heading(2, "4. Comparison and discussion"),
        Text(scope_sentence(metrics, focus)),
        Heading(3, f"Scores on the {focus} split"),
        comparison_table(metrics, focus),
        Bullets(
            [
                s
                for s in (
                    winner_sentence(metrics, focus, "gender_accuracy", "Gender"),
                    winner_sentence(metrics, focus, "gender_auc", "Gender ranking"),
                    winner_sentence(metrics, focus, "age_mae", "Age"),
                    winner_sentence(metrics, focus, "age_within_5", "Age within 5 years"),
                    ensemble_sentence(metrics, focus),
                    cost_sentence(trains),
                )
                if s
            ]
        ),
        Heading(3, "Flip averaging"),
        tta_table(metrics, other, focus, params.evaluate.flip_tta),
    ]
    sentence = tta_sentence(metrics, other, focus, params.evaluate.flip_tta)
    if sentence:
        blocks.append(Text(sentence))
    blocks += [
        Heading(3, "Where the models fail"),
        Bullets(failure_sentences(frame)),
        Figure(
            buckets_figure(frame, focus),
            f"Age MAE and gender accuracy per true-age bucket ({focus} split).",
        ),
        group_table(frame, "bucket", "age"),
        group_table(frame, "race", "race"),
        group_table(frame, "gender", "gender"),
        Figure(
            scatter_figure(predictions, metrics, focus),
            f"Predicted against true age on the {focus} split; the line is a perfect prediction.",
        ),
        *worst_faces_blocks(predictions, metrics, focus, params.report.worst_faces),
    ]
    return blocks


# --- reproduce ---------------------------------------------------------------------------------


def git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def git_state() -> str:
    head = git("rev-parse", "HEAD")
    if head is None:
        return "The git commit is unknown (no git, or not a git repository)."
    # --no-optional-locks: reading the state must not rewrite the index
    status = git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no") or ""
    ours = {REPORT_MD.as_posix(), REPORT_HTML.as_posix()}
    changed = [line[3:] for line in status.splitlines() if line[3:] not in ours]
    text = f"Git commit `{head.strip()}`"
    if not changed:
        return text + ", no uncommitted changes to tracked files."
    shown_files = ", ".join(f"`{c}`" for c in changed[:10])
    more = f" and {len(changed) - 10} more" if len(changed) > 10 else ""
    return f"{text}, with uncommitted changes to {shown_files}{more}."


def lock_rows() -> list[list[str]]:
    """md5 of every data and model file dvc.lock records: what these numbers came from."""
    if not LOCK.is_file():
        return []
    try:
        lock = yaml.safe_load(LOCK.read_text()) or {}
    except yaml.YAMLError:
        return []
    rows, seen = [], set()
    for stage, entry in (lock.get("stages") or {}).items():
        for kind in ("deps", "outs"):
            for item in (entry or {}).get(kind) or []:
                path = str(item.get("path", ""))
                if path in seen or not path.startswith(("data/", "models/")):
                    continue
                seen.add(path)
                role = f"output of {stage}" if kind == "outs" else f"input of {stage}"
                size = item.get("size")
                rows.append(
                    [
                        f"`{path}`",
                        role,
                        f"`{item.get('md5', '?')}`",
                        fmt(size, "int") if size is not None else "–",
                    ]
                )
    return rows


def reproduce_section(params: P.Params) -> list[Block]:
    rows = lock_rows()
    lock = (
        [
            Text("The data and models these results come from, as `dvc.lock` records them:"),
            Table(["path", "role", "md5", "bytes"], rows),
        ]
        if rows
        else [
            Text(
                "No `dvc.lock` here (the stages ran outside DVC), so there are no recorded hashes."
            )
        ]
    )
    p = params
    commands = "\n".join(
        [
            "dvc pull                 # data and models from the DVC remote, if one is set up",
            "dvc repro                # rerun every stage whose inputs changed, this report too",
            "dvc exp run -S model_a.fit.epochs="
            f"{2 * p.model_a.fit.epochs} -S model_b.phase2.learning_rate="
            f"{p.model_b.phase2.learning_rate / 3:.2g}   # an experiment",
            "dvc exp show             # experiments side by side",
            "dvc metrics diff         # scores against the last commit",
            "dvc params diff",
            "dvc plots diff           # learning curves and evaluation plots",
            "python -m stages.report  # this report only, from the outputs in place",
        ]
    )
    return [
        Heading(2, "5. Reproduce"),
        Text(git_state()),
        *lock,
        Text("The exact parameters (`params.yaml`):"),
        Code(P.PARAMS_FILE.read_text()),
        Text("To rerun or vary the pipeline:"),
        Code(commands),
    ]


# --- the whole report --------------------------------------------------------------------------


def abstract(params: P.Params, summary: dict, metrics: dict) -> list[Block]:
    focus = focus_split(metrics)
    splits = summary["splits"]
    return [
        Text(
            f"Two multi-task Keras models predict age (regression, years) and gender (binary) "
            f"from {params.data.image_size} px UTKFace faces: model A is a CNN trained from "
            f"scratch, model B {backbone_phrase(params.model_b)} fine-tuned in two phases; the "
            f"ensemble averages them. They train on "
            f"{splits['train']['n']:,} faces, validate on {splits['val']['n']:,} and are "
            f"compared on the {metrics['model_a'][focus]['n']:,} faces of the {focus} split."
        ),
        Bullets(
            [
                winner_sentence(metrics, focus, "gender_accuracy", "Gender"),
                winner_sentence(metrics, focus, "age_mae", "Age"),
            ]
        ),
        Text(
            "Generated by `python -m stages.report` from the pipeline's outputs; do not edit "
            "by hand. The HTML version (reports/report.html) also shows the worst-predicted "
            "faces.",
            only="markdown",
        ),
    ]


def build(params: P.Params) -> tuple[str, list[Block]]:
    summary = read_json(SUMMARY, "prepare")
    metrics = read_json(METRICS, "evaluate")
    other = read_json(OTHER_TTA, "evaluate")
    trains = {k: read_json(d / "metrics.json", STAGE_OF[k]) for k, d in TRAIN_DIRS.items()}
    breakdown = read_csv(BREAKDOWN, "evaluate")
    predictions = read_csv(PREDICTIONS, "evaluate")
    spec = BACKBONES[params.model_b.backbone]
    title = f"Age and gender from faces: a CNN from scratch against a fine-tuned {spec.application}"
    blocks: list[Block] = [
        Heading(1, title),
        *abstract(params, summary, metrics),
        *data_section(summary, params),
        *model_section(
            "model_a", 2, "Model A: CNN from scratch", params, metrics, trains["model_a"]
        ),
        *model_section(
            "model_b",
            3,
            f"Model B: {spec.application} fine-tuned in two phases",
            params,
            metrics,
            trains["model_b"],
        ),
        *comparison_section(params, metrics, other, trains, breakdown, predictions),
        *reproduce_section(params),
    ]
    return title, blocks


def main() -> None:
    params = P.load()
    FIGURES.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        title, blocks = build(params)
    made = {b.path.name for b in blocks if isinstance(b, Figure)}
    for stale in FIGURES.glob("*.png"):  # e.g. a diagram from when Graphviz was installed
        if stale.name not in made:
            stale.unlink()
    write_text(REPORT_MD, to_markdown(blocks))
    write_text(REPORT_HTML, to_html(blocks, title))
    print(f"report: wrote {REPORT_MD}, {REPORT_HTML} and {len(made)} figures in {FIGURES}")


if __name__ == "__main__":
    run(main)
