"""The worst age predictions, with their faces: shown in report.html only.

UTKFace images never enter git. report.md is committed, so it gets a sentence pointing to
the HTML instead of the thumbnails and their file names.
"""

from __future__ import annotations

import pandas as pd

from agegender.layout import ENSEMBLE, MODELS
from agegender.report.document import Block, Figure, Heading, Table, Text
from agegender.report.figures import worst_faces_figure


def best_age_model(metrics: dict, focus: str) -> str:
    """The model with the lowest age MAE on the focus split (the first one on a tie)."""
    values = [
        (metrics[m][focus]["age_mae"], i, m)
        for i, m in enumerate(MODELS)
        if metrics[m][focus]["age_mae"] is not None
    ]
    return min(values)[2] if values else ENSEMBLE.key


def worst_faces_blocks(
    predictions: pd.DataFrame, metrics: dict, focus: str, count: int
) -> list[Block]:
    """The `count` largest age errors of the best age model; nothing when count is 0."""
    if count == 0 or predictions.empty:
        return []
    model = MODELS[best_age_model(metrics, focus)]
    column = f"age_{model.key}"
    error = (predictions[column] - predictions.age).abs()
    worst = predictions.assign(error=error).nlargest(count, "error")
    path = worst_faces_figure(worst, model, focus)
    if path is None:
        return []
    rows = [
        [f"`{r['name']}`", str(r["age"]), f"{r[column]:.1f}", f"{r['error']:.1f}"]
        for _, r in worst.iterrows()
    ]
    return [
        Heading(3, "Worst age predictions"),
        Text(
            f"The {len(worst)} faces of the {focus} split with the largest age errors of "
            f"{model.name} (the best model on age) are shown in report.html only: UTKFace "
            f"images never enter git, and report.md is committed. The thumbnails are in "
            f"reports/figures, which DVC caches.",
            only="markdown",
        ),
        Text(
            f"The {len(worst)} faces of the {focus} split with the largest age errors of "
            f"{model.name}, the best model on age. This figure is kept out of report.md "
            f"(committed to git); UTKFace images are for non-commercial research only.",
            only="html",
        ),
        Figure(path, f"The largest age errors of {model.name} ({focus} split).", only="html"),
        Table(["file", "true age", "predicted", "error (years)"], rows, only="html"),
    ]
