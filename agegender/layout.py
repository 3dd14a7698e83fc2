"""Where the pipeline keeps things: one registry of its files and models.

Every stage, the report, the CLI and the benchmarks read paths and model labels from here,
so renaming a file or adding a model is one edit (dvc.yaml spells the same paths for DVC).
All paths are relative to the repository root, where `dvc repro` runs the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
SPLIT_NAMES = (*SPLITS, "unused")  # faces.csv's split column: "unused" = never sampled

PREPARED = Path("data/prepared")  # stage prepare: data/prepared/<split>/<array>.npy
SUMMARY = PREPARED / "summary.json"
FACES_CSV = PREPARED / "faces.csv"

# stage predict@KEY: one model's (N, 2) age and P(female) per split, with and without flip
PREDICTED = Path("data/predictions")
TEACHER = Path("data/teacher")  # stage teach: model B's age.npy and gender.npy on train
# train_b under train.loader stream: phase 1's backbone features, memory-mapped; a scratch
# folder beside this name (.features.<pid>.*), removed when the stage ends
FEATURES = Path("data/features")

METRICS = Path("reports/metrics.json")  # stage evaluate: the few numbers runs are compared by
EVAL = Path("reports/eval")
# Every score of every model and split, with and without averaging the mirrored face's
# prediction (evaluate.flip_tta says which of the two the metrics and the report use).
SCORE_FILES = {True: EVAL / "scores_flip.json", False: EVAL / "scores_no_flip.json"}
ENVIRONMENT = EVAL / "environment.json"  # CPU, backend, threads and library versions of the run
ENSEMBLE_WEIGHTS = EVAL / "ensemble.json"  # each model's weight per task, chosen on val
# Each model's age range and gender temperature, fitted on val; the predictor applies them
CALIBRATION = EVAL / "calibration.json"
TRUST = EVAL / "trust.json"  # on test: range coverage, calibration error, bootstrap intervals
BREAKDOWN = EVAL / "breakdown.csv"
PREDICTIONS = EVAL / "predictions.csv"

# How the models and their range hold on faces unlike the test split (scripts/shifts.py,
# in git: numbers only); the report's section "Beyond the test split" reads it
SHIFTS = Path("reports/shifts.json")

REPORT_MD = Path("reports/report.md")  # stage report
REPORT_HTML = Path("reports/report.html")
FIGURES = Path("reports/figures")  # pictures (face thumbnails, diagrams): PNG, DVC cache
CHARTS = Path("reports/charts")  # drawn from numbers only: small SVG files, kept in git
LOCK = Path("dvc.lock")
# Each stage's wall times on this machine (environment.record_times): not a DVC output and
# not in git, since times change on every run and the outputs must not
TIMES = Path("reports/times")


# Training phases, as the stages name them, DVCLive logs them and the report shows them.
FIT = "fit"  # model A: one fit
PHASE1 = "phase1"  # model B: heads on the frozen backbone
PHASE2 = "phase2"  # model B: top of the backbone unfrozen, lower learning rate


@dataclass(frozen=True)
class Model:
    key: str  # the key in params.yaml and the scores files
    label: str  # tables and figure legends
    name: str  # inside a sentence
    short: str  # column headers
    metrics_key: str  # its block in reports/metrics.json (short: dvc exp show's columns)
    colour: str  # in every figure
    file: Path | None = None  # the saved serving model; None for the ensemble
    stage: str | None = None  # the dvc.yaml stage that trains it
    live_dir: Path | None = None  # its DVCLive folder (metrics.json and plots/)
    phases: tuple[str, ...] = ()  # its training phases, in order


MODEL_A = Model(
    "model_a", "Model A", "model A", "A", "A", "#1f77b4",
    Path("models/age_gender_A.keras"), "train_a", Path("reports/train_a"), (FIT,),
)  # fmt: skip
MODEL_B = Model(
    "model_b", "Model B", "model B", "B", "B", "#d62728",
    Path("models/age_gender_B.keras"), "train_b", Path("reports/train_b"), (PHASE1, PHASE2),
)  # fmt: skip
ENSEMBLE = Model("ensemble", "Ensemble", "the ensemble", "ensemble", "AB", "#2ca02c")

TRAINED = {m.key: m for m in (MODEL_A, MODEL_B)}  # the models a stage trains and saves
MODELS = {**TRAINED, ENSEMBLE.key: ENSEMBLE}  # what evaluate scores: both, then their mean


def focus_split(test_faces: int) -> str:
    """The split the breakdowns and the report describe: test, or val when there is none."""
    return "test" if test_faces else "val"


def buckets_csv(model: str) -> Path:
    """Evaluate's per-age-bucket scores of one model (dvc.yaml plots them side by side)."""
    return EVAL / f"{model}_buckets.csv"


def predictions_dir(model: str) -> Path:
    """Stage predict@MODEL's output folder (dvc.yaml: data/predictions/${key})."""
    return PREDICTED / model


def prediction_file(split: str, flip: bool, model: str = "") -> Path:
    """One split's predictions of one model, averaged with the mirrored face's or not."""
    return predictions_dir(model) / f"{split}_{'flip' if flip else 'plain'}.npy"
