"""Reading what the other stages wrote, with one clear error per missing or broken file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from agegender import layout
from agegender.errors import UserError
from agegender.files import md5
from agegender.layout import (
    BREAKDOWN,
    ENVIRONMENT,
    MODEL_A,
    PREDICTIONS,
    SCORE_FILES,
    SHIFTS,
    SUMMARY,
    TRAINED,
    TRUST,
)


def read_json(path: Path, stage: str) -> dict:
    if not path.is_file():
        raise UserError(
            f"{path}: not found; run `dvc repro {stage}` (or `dvc pull` from a DVC remote) first"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error}); rerun `dvc repro {stage}`") from None


def read_csv(path: Path, stage: str) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(
            f"{path}: not found; run `dvc repro {stage}` (or `dvc pull` from a DVC remote) first"
        )
    return pd.read_csv(path)


@dataclass
class Outputs:
    """The pipeline's outputs the report reads (the models themselves are loaded later)."""

    summary: dict  # prepare: data/prepared/summary.json
    flip: bool  # evaluate.flip_tta: which of the two score tables the report is about
    scores: dict[bool, dict]  # evaluate: flip averaging on/off -> model -> split -> scores
    trains: dict[str, dict]  # train_a, train_b: DVCLive metrics.json, by model key
    environment: dict  # evaluate: the CPU, cores and library versions of the run
    breakdown: pd.DataFrame  # evaluate: scores per age bucket, race and gender
    predictions: pd.DataFrame  # evaluate: every face of the focus split, every model
    trust: dict  # evaluate: age-range coverage, gender calibration, bootstrap intervals
    shifts: dict | None  # scripts/shifts.py: the range and scores beyond the test split

    @property
    def metrics(self) -> dict:
        """The scores the report is about (with flip averaging when evaluate.flip_tta)."""
        return self.scores[self.flip]

    @property
    def focus(self) -> str:
        """The split evaluate's breakdowns describe: test, or val when there is none."""
        return layout.focus_split((self.metrics[MODEL_A.key].get("test") or {}).get("n", 0))


def read_outputs(flip: bool) -> Outputs:
    """All of them up front, so a missing file stops the report before anything is written.
    `flip`: evaluate.flip_tta, which of the two score files the report is about."""
    return Outputs(
        summary=read_json(SUMMARY, "prepare"),
        flip=flip,
        scores={f: read_json(path, "evaluate") for f, path in SCORE_FILES.items()},
        trains={k: read_json(m.live_dir / "metrics.json", m.stage) for k, m in TRAINED.items()},
        environment=read_json(ENVIRONMENT, "evaluate"),
        breakdown=read_csv(BREAKDOWN, "evaluate"),
        predictions=read_csv(PREDICTIONS, "evaluate"),
        trust=read_json(TRUST, "evaluate"),
        shifts=read_json(SHIFTS, "evaluate") if SHIFTS.is_file() else None,
    )


def model_md5s() -> dict[str, str]:
    """The md5 of each trained model's file, as scripts/shifts.py records them."""
    return {k: md5(m.file) for k, m in TRAINED.items() if m.file.is_file()}


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
