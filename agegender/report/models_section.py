"""One section per trained model: architecture, setup, curves, scores, time."""

from __future__ import annotations

import numpy as np

from agegender.layout import PHASE2, SPLITS, Model
from agegender.metric_table import COMPARED, SCORES
from agegender.report.document import Block, Figure, Heading, Table, Text
from agegender.report.figures import curves_figure, diagram_figure
from agegender.report.inputs import phase2_start, read_curve
from agegender.report.text import capital, diff, fmt, fmt_gap, plural


def model_section(
    model: Model,
    title: str,
    setup: list[Block],
    age_loss: str,
    scores: dict,
    train: dict,
) -> list[Block]:
    """`setup` is the model's setup table; `scores` its metrics.json block; `train` the
    DVCLive metrics.json of its training stage."""
    from agegender.evaluate.inference import load  # keras: imported only when a model is loaded

    network = load(str(model.file))
    phases = model.phases
    phase2 = phase2_start(model.live_dir) if PHASE2 in phases else None
    name = capital(model.name)
    caption = f"{name}: train and val curves per epoch (val without augmentation)." + (
        " The dashed line marks where phase 2 (backbone unfrozen) begins."
        if phase2 is not None
        else ""
    )
    return [
        Heading(2, title),
        *architecture(network, model),
        *setup,
        Heading(3, f"{name}: learning curves"),
        Figure(curves_figure(model, age_loss, phase2), caption),
        Text(curves_text(model)),
        Heading(3, f"{name}: scores per split"),
        scores_table(scores),
        Text(gap_sentence(model, scores)),
        Heading(3, f"{name}: training phases"),
        phases_table(train, phases),
        Text(
            f"{plural(train.get('epochs', 0), 'epoch')} in all. Wall times are not part of the "
            f"results (they differ on every run and machine): `dvc repro` writes them to "
            f"`reports/times/`, outside git and DVC."
        ),
    ]


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


def architecture(network, model: Model) -> list[Block]:
    """The saved Keras model's layers, parameter counts and, with Graphviz, its graph."""
    rows = [
        [
            f"`{layer.name}`",
            type(layer).__name__,
            layer_shape(layer),
            fmt(layer.count_params(), "int"),
        ]
        for layer in network.layers
    ]
    trainable = sum(int(np.prod(w.shape)) for w in network.trainable_weights)
    total = network.count_params()
    name = capital(model.name)
    blocks: list[Block] = [
        Heading(3, f"{name}: architecture"),
        Text(
            f"{total:,} parameters, {trainable:,} of them trainable in the saved model and "
            f"{total - trainable:,} frozen (BatchNorm statistics, frozen layers and the fixed "
            f"weights that turn an age distribution into its mean). Output shapes leave out "
            f"the batch axis."
        ),
        Table(["layer", "type", "output shape", "parameters"], rows, folded=f"{name}: every layer"),
    ]
    diagram = diagram_figure(network, model.key)
    if diagram is not None:
        caption = f"{name}: layer graph (keras plot_model); full size in {diagram}."
        blocks.append(Figure(diagram, caption, folded=True))
    return blocks


def curves_text(model: Model) -> str:
    """Which epoch was kept, and how far val age MAE ended from train's."""
    val = read_curve(model.live_dir, "val/loss")
    train = read_curve(model.live_dir, "train/age_mae")
    if val is None:
        return "No learning curves were logged."
    best = int(val.step[val.loss.idxmin()]) + 1
    text = (
        f"Val loss is lowest at epoch {best} of {len(val)} ({val.loss.min():.4f}); those "
        f"weights are the ones saved and evaluated."
    )
    vmae = read_curve(model.live_dir, "val/age_mae")
    if train is not None and vmae is not None:
        gap = float(vmae.age_mae.iloc[-1] - train.age_mae.iloc[-1])
        side = "above" if gap > 0 else "below"
        text += (
            f" At the last epoch val age MAE is {abs(gap):.2f} years {side} train age MAE "
            f"(train is measured with augmentation and dropout active)."
        )
    return text


def scores_table(scores: dict) -> Table:
    """Metrics x splits with the val - train gap: the numbers of reports/metrics.json."""
    rows = []
    for score in SCORES:
        values = [(scores.get(s) or {}).get(score.key) for s in SPLITS]
        gap = "" if score.fmt == "int" else fmt_gap(diff(values[1], values[0]), score.fmt)
        rows.append([score.label, *(fmt(v, score.fmt) for v in values), gap])
    return Table(["metric", *SPLITS, "val - train"], rows)


def gap_sentence(model: Model, scores: dict) -> str:
    """How much worse val is than train, per task, and what the two gaps say together."""
    train, val = scores.get("train") or {}, scores.get("val") or {}
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
        f"Scored the same way (no augmentation, no dropout), {model.name}'s val age MAE "
        f"differs from its train age MAE by {mae:+.3f} years and its val gender accuracy from "
        f"its train accuracy by {100 * acc:+.2f} points. {verdict}"
    )


def phases_table(train: dict, phases: tuple[str, ...]) -> Table:
    """Epochs per phase, and the val scores of the weights kept after each."""
    rows = []
    for phase in phases:
        block = train.get(phase) or {}
        rows.append(
            [
                phase,
                str(block.get("epochs", "–")),
                fmt(block.get("val_loss"), "4f"),
                *(fmt(block.get(f"val_{s.key}"), s.fmt) for s in COMPARED),
            ]
        )
    best = train.get("best") or {}
    rows.append(
        [
            "best weights",
            str(train.get("epochs", "–")),
            fmt(best.get("val_loss"), "4f"),
            *(fmt(best.get(f"val_{s.key}"), s.fmt) for s in COMPARED),
        ]
    )
    header = ["phase", "epochs", "val loss"]
    return Table([*header, *(f"val {s.words}" for s in COMPARED)], rows)
