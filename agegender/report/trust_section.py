"""The section How much to trust a prediction: the age range's coverage and width, the
gender probability's calibration, and the 95 % intervals on every score (trust.json)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure as Plot

from agegender.labels import AGE_BUCKETS
from agegender.layout import MODELS
from agegender.report.document import Block, Figure, Heading, Table, Text
from agegender.report.figures import save
from agegender.report.text import fmt


def trust_section(trust: dict, focus: str) -> list[Block]:
    level, models = trust["level"], trust["models"]
    keys = [m for m in MODELS if m in models]
    coverage = ", ".join(
        f"{MODELS[m].name} {fmt(models[m]['coverage'], 'pct')} "
        f"({models[m]['mean_width']:.1f} years wide on average, "
        f"{models[m]['method'].replace('_', ' ')})"
        for m in keys
    )
    buckets = [b for b in AGE_BUCKETS if b in models[keys[0]]["by"]["bucket"]]
    calibration = [
        [
            MODELS[m].label,
            f"{models[m]['gender_temperature']:.3f}",
            *(
                f"{models[m]['gender'][when][score]:.4f}"
                for score in ("ece", "brier", "log_loss")
                for when in ("before", "after")
            ),
        ]
        for m in keys
    ]
    intervals = trust["intervals"]
    return [
        Heading(2, "How much to trust a prediction"),
        Text(
            f"Each prediction comes with an age range meant to hold the true age "
            f"{level:.0%} of the time. The ranges are split-conformal: fitted on the val "
            f"residuals only (per bucket of predicted age where that kept every bucket's "
            f"coverage in 2-fold cross-validation on val), then measured here on the "
            f"{trust['split_faces']:,} faces of the {focus} split: {coverage}."
        ),
        Table(
            [
                "true age",
                "faces",
                *(f"{MODELS[m].short} coverage" for m in keys),
                *(f"{MODELS[m].short} width" for m in keys),
            ],
            [
                [
                    b,
                    fmt(models[keys[0]]["by"]["bucket"][b]["n"], "int"),
                    *(fmt(models[m]["by"]["bucket"][b]["coverage"], "pct") for m in keys),
                    *(f"{models[m]['by']['bucket'][b]['mean_width']:.1f} years" for m in keys),
                ]
                for b in buckets
            ],
        ),  # fmt: skip
        Table(
            ["race", "faces", *(f"{MODELS[m].short} coverage" for m in keys)],
            [
                [
                    race,
                    fmt(block["n"], "int"),
                    *(fmt(models[m]["by"]["race"][race]["coverage"], "pct") for m in keys),
                ]
                for race, block in models[keys[0]]["by"]["race"].items()
            ],
        ),  # fmt: skip
        Figure(
            coverage_figure(trust, buckets, keys),
            f"Coverage of the {level:.0%} age range and its mean width per true-age bucket "
            f"({focus} split); the dashed line is the level asked for.",
        ),
        Text(
            "The gender probability is temperature-scaled: its logit is divided by one number "
            "per model, fitted by log loss on val, which changes no prediction at 0.5 and makes "
            "0.9 mean right about 9 times in 10. Expected calibration error (ECE, 15 bins), "
            f"Brier score and log loss on the {focus} split, before and after:"
        ),
        Table(
            [
                "model",
                "temperature",
                "ECE before",
                "ECE after",
                "Brier before",
                "Brier after",
                "log loss before",
                "log loss after",
            ],
            calibration,
        ),  # fmt: skip
        Figure(
            reliability_figure(trust, keys),
            f"Reliability of P(female) before and after scaling ({focus} split): a calibrated "
            f"model lies on the diagonal.",
        ),
        Text(
            f"95 % bootstrap intervals ({intervals['resamples']:,} paired resamples of the "
            f"{intervals['faces']:,} faces, seeded): the range a score would likely take on "
            f"another sample of faces like these. A difference whose interval holds 0 is not "
            f"a difference this split can show."
        ),
        Table(
            ["model", "gender accuracy", "age MAE", "age within 5 years"],
            [
                [MODELS[m].label, *(span(intervals["models"][m][s], k) for s, k in SCORES)]
                for m in keys
            ],
        ),
        Table(
            ["difference", "gender accuracy", "age MAE", "age within 5 years"],
            [
                [names(pair), *(span(block[s], k, signed=True) for s, k in SCORES)]
                for pair, block in intervals["differences"].items()
            ],
        ),
    ]


SCORES = (("gender_accuracy", "pct"), ("age_mae", "3f"), ("age_within_5", "pct"))


def names(pair: str) -> str:
    second, first = pair.split(" - ")
    return f"{MODELS[second].label} - {MODELS[first].label}"


def span(block: dict, kind: str, signed: bool = False) -> str:
    """'94.08% (93.42% to 94.72%)'; differences signed, in points or years."""
    if kind == "pct":
        scale, form, unit = 100, "+.2f" if signed else ".2f", " pts" if signed else "%"
    else:
        scale, form, unit = 1, "+.3f" if signed else ".3f", ""
    v, lo, hi = (scale * block[k] for k in ("value", "low", "high"))
    return f"{v:{form}}{unit} ({lo:{form}} to {hi:{form}})"


def coverage_figure(trust: dict, buckets: list[str], keys: list[str]):
    figure = Plot(figsize=(11, 3.8), layout="constrained")
    axes = figure.subplots(1, 2)
    x = np.arange(len(buckets))
    for m in keys:
        by = trust["models"][m]["by"]["bucket"]
        style = {"color": MODELS[m].colour, "label": MODELS[m].label, "marker": "o"}
        axes[0].plot(x, [100 * by[b]["coverage"] for b in buckets], **style)
        axes[1].plot(x, [by[b]["mean_width"] for b in buckets], **style)
    axes[0].axhline(100 * trust["level"], color="black", linestyle="--", linewidth=1)
    for ax, label in ((axes[0], "coverage (%)"), (axes[1], "mean width (years)")):
        ax.set_xticks(x, buckets)
        ax.set_xlabel("true age (years)")
        ax.set_ylabel(label)
    axes[0].set_title(f"{trust['level']:.0%} age range: coverage")
    axes[1].set_title("and width")
    axes[0].legend()
    return save(figure, "age_range")


def reliability_figure(trust: dict, keys: list[str]):
    figure = Plot(figsize=(11, 3.6), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, when in zip(axes, ("before", "after"), strict=True):
        ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1)
        for m in keys:
            bins = trust["models"][m]["gender"][when]["reliability"]
            ax.plot(
                [b["predicted"] for b in bins], [b["observed"] for b in bins],
                marker="o", color=MODELS[m].colour, label=MODELS[m].label,
            )  # fmt: skip
        ax.set_xlabel("predicted P(female)")
        ax.set_title(f"{when} temperature scaling")
    axes[0].set_ylabel("observed share of women")
    axes[0].legend()
    return save(figure, "gender_reliability")
