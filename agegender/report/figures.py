"""The report's figures, one function each: charts drawn from numbers only as SVG files in
reports/charts (small, in git, so a fresh clone's report.md shows them), face thumbnails as
PNG files in reports/figures (DVC cache only: UTKFace's pixels never go into git).

matplotlib's object API only (no pyplot): no global state and no GUI backend. The caller
sets STYLE with matplotlib.rc_context around the whole report.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from agegender.files import atomic_path
from agegender.labels import AGE_BUCKETS
from agegender.layout import CHARTS, FIGURES, MODELS, SPLIT_NAMES, Model
from agegender.report.inputs import read_curve
from agegender.report.text import fmt

CURVES = (  # DVCLive metric file, panel title; one 2x2 figure per model
    ("gender_loss", "gender loss (binary cross-entropy)"),
    ("gender_accuracy", "gender accuracy"),
    ("age_loss", "age loss"),
    ("age_mae", "age MAE (years)"),
)
COLORS = {  # splits here; each model's colour is in layout's registry
    **{key: model.colour for key, model in MODELS.items()},
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
    "svg.hashsalt": "agegender",  # the same ids in every run: reruns give the same bytes
    "svg.fonttype": "none",  # text as text: smaller files
}


def save(figure: Figure, name: str) -> Path:
    """reports/charts/<name>.svg, written whole or not at all; no date in the file."""
    path = CHARTS / f"{name}.svg"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="svg", metadata={"Date": None, "Creator": None})
    return path


def save_picture(figure: Figure, name: str) -> Path:
    """reports/figures/<name>.png, for figures that hold faces; no timestamp in the file."""
    path = FIGURES / f"{name}.png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
    return path


def age_histogram_figure(splits: dict) -> Path:
    """Each split's age buckets as shares of it, side by side: the stratification, seen."""
    figure = Figure(figsize=(8.5, 3.6))
    ax = figure.subplots()
    names = [s for s in SPLIT_NAMES if splits.get(s, {}).get("n")]
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(AGE_BUCKETS))
    for i, name in enumerate(names):
        block = splits[name]
        counts = np.array([block["age_histogram"].get(b, 0) for b in AGE_BUCKETS])
        ax.bar(
            x + (i - (len(names) - 1) / 2) * width,
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


def curves_figure(model: Model, age_loss: str, phase2: int | None) -> Path:
    """Train and val on the four curves; epochs count from 1, phase 2 marked for model B."""
    figure = Figure(figsize=(10, 6.6), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True).ravel()
    for ax, (name, label) in zip(axes, CURVES, strict=True):
        label = f"age loss ({age_loss})" if name == "age_loss" else label
        for split in ("train", "val"):
            frame = read_curve(model.live_dir, f"{split}/{name}")
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
    figure.suptitle(f"{model.label}: learning curves")
    return save(figure, f"curves_{model.key}")


def buckets_figure(frame: pd.DataFrame, focus: str) -> Path:
    """Age MAE and gender accuracy per true-age bucket, one bar per model."""
    figure = Figure(figsize=(11, 3.8), layout="constrained")
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
                label=MODELS[model].label,
            )
        ax.set_xticks(x, buckets)
        ax.set_xlabel("true age (years)")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per age bucket ({focus} split)")
    axes[0].legend()
    return save(figure, "age_buckets")


def scatter_figure(predictions: pd.DataFrame, metrics: dict, focus: str) -> Path:
    """Predicted against true age, one panel per model, with its MAE in the title."""
    figure = Figure(figsize=(12, 4.2), layout="constrained")
    axes = figure.subplots(1, len(MODELS), sharex=True, sharey=True)
    top = max([predictions.age.max()] + [predictions[f"age_{m}"].max() for m in MODELS]) + 5
    for ax, model in zip(axes, MODELS.values(), strict=True):
        ax.scatter(
            predictions.age,
            predictions[f"age_{model.key}"],
            s=6,
            alpha=0.35,
            color=COLORS[model.key],
            linewidths=0,
            rasterized=True,  # thousands of dots: one embedded bitmap keeps the SVG small
        )
        ax.plot([0, top], [0, top], color="#333", linewidth=1, label="perfect")
        mae = fmt(metrics[model.key][focus]["age_mae"], "3f")
        ax.set_title(f"{model.label} (MAE {mae} years)")
        ax.set_xlabel("true age (years)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal")
    axes[0].set_ylabel("predicted age (years)")
    axes[0].legend(loc="upper left")
    return save(figure, "age_scatter")


def worst_faces_figure(worst: pd.DataFrame, model: Model, focus: str) -> Path | None:
    """Thumbnails of the largest age errors: HTML and DVC cache only, never git.

    None when a face in predictions.csv is not in the prepared split (stale outputs).
    """
    from agegender.data import load_split

    split = load_split(focus)
    index = {str(name): i for i, name in enumerate(split.name)}
    rows = [index.get(str(name)) for name in worst["name"]]
    if not rows or None in rows:
        return None
    images = np.asarray(split.images[np.array(rows)])
    columns = min(8, len(rows))
    lines = math.ceil(len(rows) / columns)
    figure = Figure(figsize=(1.5 * columns, 1.85 * lines), layout="constrained")
    axes = np.atleast_1d(figure.subplots(lines, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, (_, face) in zip(axes, images, worst.iterrows(), strict=False):
        ax.imshow(image, interpolation="lanczos" if image.shape[0] < 96 else "antialiased")
        predicted = face[f"age_{model.key}"]
        ax.set_title(f"true {face['age']}, pred {predicted:.0f}", fontsize=8)
    figure.suptitle(f"{model.label}: the {len(rows)} largest age errors ({focus} split)")
    return save_picture(figure, "worst_faces")


def diagram_figure(network, key: str) -> Path | None:
    """keras.utils.plot_model, only where pydot and Graphviz's `dot` are installed."""
    if importlib.util.find_spec("pydot") is None or shutil.which("dot") is None:
        return None
    import keras

    path = FIGURES / f"diagram_{key}.png"
    try:
        with atomic_path(path) as tmp:
            keras.utils.plot_model(
                network,
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
