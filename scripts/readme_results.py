"""Write the README's Results table from evaluate's scores (never typed by hand).

python scripts/readme_results.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from agegender import params as P
from agegender.layout import ENSEMBLE, MODEL_A, MODEL_B, MODELS, SCORE_FILES, SHIFTS, TRUST
from agegender.metric_table import BY_KEY
from agegender.models.backbones import BACKBONES

README = Path("README.md")
# The study's best reported validation numbers (university reports, 5,000 faces).
STUDY = {
    "from scratch (best report)": (0.921, 6.52),
    "fine-tuned (best report)": (0.912, 6.02),
    "range over all reports": ("82-93 %", "5.6-8.5"),
}


def trust_sentence(trust: dict) -> str:
    """The age range's test coverage and the 95 % intervals, from reports/eval/trust.json."""
    level, models = trust["level"], trust["models"]
    ranges = ", ".join(
        f"{MODELS[k].short} {models[k]['coverage']:.1%} ({models[k]['mean_width']:.1f} years wide)"
        for k in MODELS
        if k in models
    )
    spans = trust["intervals"]["models"]
    acc = ", ".join(
        f"{MODELS[k].short} {spans[k]['gender_accuracy']['low']:.1%}-"
        f"{spans[k]['gender_accuracy']['high']:.1%} / {spans[k]['age_mae']['low']:.2f}-"
        f"{spans[k]['age_mae']['high']:.2f}"
        for k in MODELS
        if k in spans
    )
    return (
        f"Each prediction comes with an age range at {level:.0%}: on UTKFace's test faces it "
        f"holds the true age for {ranges}. 95 % bootstrap intervals on test (gender accuracy "
        f"/ age MAE): {acc}."
    )


def shift_sentence(shifts: dict | None) -> str:
    """Where the range was measured beyond UTKFace (reports/shifts.json), if it was."""
    aaf = (shifts or {}).get("shifts", {}).get("aaf_train_2000")
    if aaf is None:
        return ""
    b = aaf["models"][MODEL_B.key]
    return (
        f" On faces unlike UTKFace's it holds less: on AAF-train-2000 (another collection, "
        f"mostly East Asian) model B's range held {b['coverage']:.1%} (mean error "
        f"{b['mean_signed_error']:+.1f} years); `agegender-calibrate` refits it on your own "
        f'labelled faces (the report\'s "Beyond the test split").'
    )


def names(params: P.Params) -> dict[str, str]:
    """Row labels, one per model of the registry: model B's names the backbone params.yaml
    chose, model A's says whether it learned from B's predictions (so from scratch against
    fine-tuned stays an honest pair); any other model goes by its label."""
    distilled = ", distilled from B" if params.model_a.teacher != "none" else ""
    described = {
        MODEL_A.key: f"A: CNN from scratch{distilled}",
        MODEL_B.key: f"B: {BACKBONES[params.model_b.backbone].title} fine-tuned",
        ENSEMBLE.key: "A+B ensemble (weights chosen on val)",
    }
    return {key: described.get(key, model.label) for key, model in MODELS.items()}


def table(metrics: dict, params: P.Params) -> str:
    columns = [BY_KEY[key].label for key in ("gender_accuracy", "age_mae", "age_within_5", "n")]
    lines = [f"| model | split | {' | '.join(columns)} |", "|---|---|---:|---:|---:|---:|"]
    for model, name in names(params).items():
        for split in ("val", "test"):
            m = metrics[model][split]
            if not m["n"]:
                continue
            lines.append(
                f"| {name} | {split} | {m['gender_accuracy']:.1%} | {m['age_mae']:.2f} | "
                f"{m['age_within_5']:.1%} | {m['n']} |"
            )
    for name, (gender, mae) in STUDY.items():
        gender = f"{gender:.1%}" if isinstance(gender, float) else gender
        lines.append(f"| study: {name} | val | {gender} | {mae} | | 1000 |")
    return "\n".join(lines)


def render(params: P.Params, metrics: dict, trust: dict, shifts: dict | None = None) -> str:
    """The README block between the results markers, from the committed files."""
    return (
        f"{table(metrics, params)}\n\n"
        "`val` is the 1,000-face validation split (used for early stopping); `test` holds "
        "faces no model saw during training. The `study:` rows are the university reports' "
        "own validation numbers (their splits of 5,000 faces), for reference.\n\n"
        f"{trust_sentence(trust)}{shift_sentence(shifts)}\n"
    )


def main() -> None:
    params = P.load()
    metrics = json.loads(SCORE_FILES[params.evaluate.flip_tta].read_text())
    trust = json.loads(TRUST.read_text())
    shifts = json.loads(SHIFTS.read_text()) if SHIFTS.is_file() else None
    text = README.read_text()
    start, end = "<!-- results:start", "<!-- results:end -->"
    head, rest = text.split(start, 1)
    marker_line, _ = rest.split("\n", 1)
    _, tail = rest.split(end, 1)
    block = render(params, metrics, trust, shifts)
    README.write_text(f"{head}{start}{marker_line}\n{block}{end}{tail}")
    print(re.sub(r"\n+", "\n", table(metrics, params)))


if __name__ == "__main__":
    main()
