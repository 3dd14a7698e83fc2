"""The section Comparison and discussion: every comparative sentence computed from the scores."""

from __future__ import annotations

import pandas as pd

from agegender.layout import ENSEMBLE, MODEL_A, MODEL_B, MODELS, TRAINED
from agegender.metric_table import BY_KEY, COMPARED, SCORES
from agegender.report.document import Block, Bullets, Figure, Heading, Table, Text
from agegender.report.figures import buckets_figure, scatter_figure
from agegender.report.inputs import Outputs
from agegender.report.text import capital, fmt, interval_phrase, join, plural
from agegender.report.worst_faces import worst_faces_blocks

SMALL_GROUP = 30  # below this many faces a group's score is mostly noise


def comparison_section(outputs: Outputs, worst_faces: int) -> list[Block]:
    """`worst_faces`: how many thumbnails to show (HTML only)."""
    metrics, flip = outputs.metrics, outputs.flip
    focus = outputs.focus
    differences = outputs.trust["intervals"]["differences"]
    breakdown = outputs.breakdown
    frame = breakdown[breakdown.split == focus] if "split" in breakdown else breakdown
    blocks: list[Block] = [
        Heading(2, "Comparison and discussion"),
        Text(scope_sentence(metrics, focus)),
        Heading(3, f"Scores on the {focus} split"),
        comparison_table(metrics, focus),
        Bullets(
            [
                s
                for s in (
                    winner_sentence(metrics, focus, "gender_accuracy", "Gender", differences),
                    winner_sentence(metrics, focus, "age_mae", "Age", differences),
                    winner_sentence(
                        metrics, focus, "age_within_5", "Age within 5 years", differences
                    ),
                    ensemble_sentence(metrics, focus, differences),
                    cost_sentence(outputs.trains),
                )
                if s
            ]
        ),
        Heading(3, "Flip averaging"),
        flip_table(outputs.scores, focus, flip),
    ]
    flips = outputs.trust["flip_intervals"]["differences"]
    sentence = flip_sentence(outputs.scores, focus, flip, flips)
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
            scatter_figure(outputs.predictions, metrics, focus),
            f"Predicted against true age on the {focus} split; the line is a perfect prediction.",
        ),
        *worst_faces_blocks(outputs.predictions, metrics, focus, worst_faces),
    ]
    return blocks


def scope_sentence(metrics: dict, focus: str) -> str:
    n = metrics[MODEL_A.key][focus]["n"]
    if focus == "test":
        return (
            f"All scores in this section are on the test split ({n:,} faces), which no "
            f"model trained or early-stopped on."
        )
    return (
        f"All scores in this section are on the val split ({n:,} faces): there is no test "
        f"split, and val chose the saved epochs, so these scores are slightly optimistic."
    )


def comparison_table(metrics: dict, focus: str) -> Table:
    rows = [
        [model.label, *(fmt(metrics[key][focus][s.key], s.fmt) for s in SCORES)]
        for key, model in MODELS.items()
    ]
    return Table(["model", *(s.label for s in SCORES)], rows)


def winner_sentence(
    metrics: dict, focus: str, key: str, task: str, differences: dict | None = None
) -> str:
    """Which model leads `key` on the focus split and by how much, each gap with its paired
    bootstrap interval (`differences`: trust.json's) so no bare winner is declared."""
    score = BY_KEY[key]
    label, unit, decimals, kind = score.words, score.unit, score.decimals, score.fmt
    values = [(m, metrics[m][focus][key]) for m in MODELS if metrics[m][focus][key] is not None]
    if not values:
        return f"{task}: no {label} on the {focus} split."
    lower = score.lower_is_better
    values.sort(key=lambda mv: mv[1], reverse=not lower)
    best_key, best = values[0]
    if all(v == best for _, v in values):
        return (
            f"{task}: all models reach the same {label}, {fmt(best, kind)}, on the {focus} split."
        )
    scale = 100 if kind == "pct" else 1
    lead = 1 if lower else -1  # the interval of the lead, m - best or best - m: positive
    gaps = [
        f"{MODELS[m].name} by {abs(v - best) * scale:.{decimals}f}{unit} ({fmt(v, kind)}, "
        f"{interval_phrase(differences or {}, best_key, m, key, kind, lead)})"
        for m, v in values[1:]
    ]
    return (
        f"{task}: {MODELS[best_key].name} has the best {label} on the {focus} split, "
        f"{fmt(best, kind)}{unit if unit == ' years' else ''}; it leads {join(gaps)}."
    )


def change_text(change: float, unit: str, decimals: int) -> str:
    """'lowers {} by 0.120 years' style phrase for a signed change; {} takes the metric."""
    if round(change, decimals) == 0:
        return "leaves {} unchanged"
    verb = "lowers" if change < 0 else "raises"
    return f"{verb} {{}} by {abs(change):.{decimals}f} {unit}"


def ensemble_sentence(metrics: dict, focus: str, differences: dict | None = None) -> str:
    """What averaging buys over the better single model, per task, with its interval."""
    m = {k: metrics[k][focus] for k in MODELS}
    if any(m[k]["age_mae"] is None for k in MODELS):
        return ""
    by_mae = min(TRAINED, key=lambda k: m[k]["age_mae"])
    by_acc = max(TRAINED, key=lambda k: m[k]["gender_accuracy"])
    mae = m[ENSEMBLE.key]["age_mae"] - m[by_mae]["age_mae"]
    acc = m[ENSEMBLE.key]["gender_accuracy"] - m[by_acc]["gender_accuracy"]
    d = differences or {}
    mae_interval = interval_phrase(d, by_mae, ENSEMBLE.key, "age_mae", "3f")
    acc_interval = interval_phrase(d, by_acc, ENSEMBLE.key, "gender_accuracy", "pct")
    return (
        "Averaging the two models' outputs (the ensemble) "
        + change_text(mae, "years", 3).format("the age MAE")
        + f" relative to the better single model ({mae_interval}), and "
        + change_text(100 * acc, "points", 2).format("gender accuracy")
        + f" relative to the more accurate one ({acc_interval})."
    )


def cost_sentence(trains: dict) -> str:
    """Model B's size and epochs against model A's (wall times are no result: README)."""
    a, b = trains[MODEL_A.key], trains[MODEL_B.key]
    pa, pb = a.get("parameters"), b.get("parameters")
    if not (pa and pb):
        return ""
    return (
        f"Cost: model B has {pb:,} parameters, {pb / pa:.1f} times model A's {pa:,}, and "
        f"trained for {plural(b.get('epochs', 0), 'epoch')} against "
        f"{plural(a.get('epochs', 0), 'epoch')} for model A."
    )


def flip_table(scores: dict[bool, dict], focus: str, flip: bool) -> Table:
    """Each model's scores with and without flip averaging; `flip` says which was reported."""
    rows = []
    for key, model in MODELS.items():
        for averaged in (flip, not flip):
            label = ("with" if averaged else "without") + " flip averaging"
            block = (scores[averaged].get(key) or {}).get(focus) or {}
            rows.append(
                [
                    model.label,
                    label + (" (reported)" if averaged == flip else ""),
                    *(fmt(block.get(s.key), s.fmt) for s in COMPARED),
                ]
            )
    return Table(["model", "prediction", *(s.label for s in COMPARED)], rows)


def flip_sentence(scores: dict[bool, dict], focus: str, flip: bool, flips: dict) -> str:
    on, off = ((scores[f].get(ENSEMBLE.key) or {}).get(focus) or {} for f in (True, False))
    if on.get("age_mae") is None or off.get("age_mae") is None:
        return ""
    mae, acc = on["age_mae"] - off["age_mae"], on["gender_accuracy"] - off["gender_accuracy"]
    return (
        f"Averaging each prediction with that of the mirrored face changes the ensemble's "
        f"age MAE by {mae:+.3f} years ({interval_phrase(flips, 'plain', 'flip', 'age_mae', '3f')}) "
        f"and its gender accuracy by {100 * acc:+.2f} points "
        f"({interval_phrase(flips, 'plain', 'flip', 'gender_accuracy', 'pct')}) "
        f"(`evaluate.flip_tta` is {str(flip).lower()}: the scores above are "
        f"{'with' if flip else 'without'} it)."
    )


def group_table(frame: pd.DataFrame, kind: str, title: str) -> Table:
    """breakdown.csv's rows of one kind (bucket, race, gender): faces, MAE and accuracy."""
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
        *(f"MAE {MODELS[m].short}" for m in models),
        *(f"accuracy {MODELS[m].short}" for m in models),
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
            f"{capital(MODELS[model].name)}: age is worst in the {worst.group} bucket (MAE "
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
