"""The section Beyond the test split: how the models and their age range hold on faces that
are not like UTKFace's test split (reports/shifts.json, written by scripts/shifts.py)."""

from __future__ import annotations

from matplotlib.figure import Figure as Plot

from agegender.layout import MODELS
from agegender.report.document import Block, Figure, Heading, Table, Text
from agegender.report.figures import save
from agegender.report.text import fmt


def shift_section(shifts: dict | None, current_models: dict[str, str]) -> list[Block]:
    """`current_models`: the md5 of each model file now, to say when the measurements are
    of other models than the ones this report describes."""
    heading = Heading(2, "Beyond the test split")
    if shifts is None:
        return [
            heading,
            Text(
                "Not measured for these models: `python scripts/shifts.py` measures the range "
                "and the scores on faces unlike the test split (writes reports/shifts.json)."
            ),
        ]
    level, rows = shifts["level"], shifts["shifts"]
    stale = {k: v for k, v in shifts.get("model_md5", {}).items() if current_models.get(k) != v}
    keys = [m for m in MODELS if m in next(iter(rows.values()))["models"]]
    blocks: list[Block] = [
        heading,
        Text(
            f"Every number above is measured on UTKFace's test split, faces like those the "
            f"models and the range were fitted on. The {level:.0%} range is split-conformal: "
            f"its guarantee holds for faces exchangeable with the val faces it was fitted on, "
            f"and no further. Below, the same models and calibration on faces that differ: "
            f"UTKFace's test faces of one race with the range refitted on val without that "
            f"race, the test faces degraded (JPEG quality 30, blurred, 32 px faces), pasted "
            f"into photos and found by the detector, and AAF-train-2000, another collection "
            f"(mostly East Asian faces, aligned, through the detector). Mean error is "
            f"predicted minus true age: negative means too young. For your own faces, "
            f"`agegender-evaluate FOLDER` measures the same, and `agegender-calibrate FOLDER "
            f"--out mine.json` refits the correction, range and temperature on them."
        ),
    ]
    if stale:
        blocks.append(
            Text(
                f"These measurements are of other model files than this report's "
                f"({', '.join(sorted(stale))} changed since): rerun `python scripts/shifts.py`."
            )
        )
    blocks += [
        Table(
            [
                "faces",
                "n",
                *(f"{MODELS[m].short} holds" for m in keys),
                *(f"{MODELS[m].short} width" for m in keys),
                *(f"{MODELS[m].short} MAE" for m in keys),
                *(f"{MODELS[m].short} mean error" for m in keys),
                "B gender",
            ],
            [
                [
                    block["note"],
                    fmt(block["models"][keys[0]]["n"], "int"),
                    *(fmt(block["models"][m]["coverage"], "pct") for m in keys),
                    *(f"{block['models'][m]['mean_width']:.1f}" for m in keys),
                    *(f"{block['models'][m]['age_mae']:.2f}" for m in keys),
                    *(f"{block['models'][m]['mean_signed_error']:+.2f}" for m in keys),
                    fmt(block["models"]["model_b"]["gender_accuracy"], "pct"),
                ]
                for block in rows.values()
            ],
        ),  # fmt: skip
        *adaptive_text(rows),
        Figure(
            coverage_figure(rows, keys, level),
            f"How often the {level:.0%} age range holds the true age, per kind of faces; the "
            f"dashed line is the level asked for.",
        ),
    ]
    return blocks


def coverage_figure(rows: dict, keys: list[str], level: float):
    plot = Plot(figsize=(7, 0.35 * len(rows) + 1.2))
    ax = plot.subplots()
    names = list(rows)
    height = 0.8 / len(keys)
    for i, m in enumerate(keys):
        values = [rows[n]["models"][m]["coverage"] * 100 for n in names]
        positions = [j + i * height for j in range(len(names))]
        ax.barh(positions, values, height, label=MODELS[m].label, color=MODELS[m].colour)
    ax.axvline(level * 100, color="black", linestyle="--", linewidth=1)
    ax.set_yticks([j + height * (len(keys) - 1) / 2 for j in range(len(names))])
    ax.set_yticklabels([n.replace("_", " ") for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("range holds the true age (%)")
    ax.legend(loc="lower left", fontsize=8)
    return save(plot, "shift_coverage")


def adaptive_text(rows: dict) -> list[Block]:
    """What the range that widens with each face's difficulty did, against evaluate's."""
    test, aaf = rows.get("utkface_test"), rows.get("aaf_train_2000")
    if not test or "adaptive" not in test or not aaf:
        return []
    b, ab = "model_b", test["adaptive"]["model_b"]
    wider = ab["mean_width"] / test["models"][b]["mean_width"] - 1
    return [
        Text(
            f"A range that widens where the model is unsure was measured too (normalized "
            f"conformal on val: each face's error over how far its prediction moves when "
            f"the face is mirrored): for model B it widens the test range by {wider:.0%} "
            f"({test['models'][b]['mean_width']:.1f} to {ab['mean_width']:.1f} years) and "
            f"takes AAF-train-2000's coverage only from "
            f"{fmt(aaf['models'][b]['coverage'], 'pct')} to "
            f"{fmt(aaf['adaptive'][b]['coverage'], 'pct')}: a population the model misjudges "
            f"by years is not one it is unsure about. The ranges stay per bucket of "
            f"predicted age; refitting them on the population (agegender-calibrate) is what "
            f"restores the coverage."
        )
    ]
