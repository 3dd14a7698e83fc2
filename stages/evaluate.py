"""Stage `evaluate`: both models (and their ensemble) scored on train, val and test.

It reads the predictions of stages predict@model_a and predict@model_b, so it needs no
Keras and takes seconds.

Writes reports/metrics.json (the 12 numbers `dvc exp show` and `dvc metrics diff`
compare: val and test gender accuracy and age MAE of A, B and the ensemble),
reports/eval/scores_flip.json and scores_no_flip.json (every score, with and without
averaging the mirrored face's prediction), reports/eval/ensemble.json (the ensemble's
weights, chosen on val), reports/eval/calibration.json (each model's age range and gender
temperature, fitted on val) and trust.json (their coverage and calibration on test, and
bootstrap intervals on every score), reports/eval/environment.json (CPU and library versions),
breakdowns per age bucket, race and gender, and per-face
predictions for the plots.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from agegender import params as P
from agegender.data import load_split
from agegender.environment import describe
from agegender.errors import UserError, run
from agegender.evaluate import trust
from agegender.evaluate.ensemble import combine, ensemble_weights
from agegender.evaluate.intervals import bootstrap, per_face
from agegender.evaluate.metrics import breakdown, compared, scores
from agegender.files import together, write_text
from agegender.layout import (
    BREAKDOWN,
    CALIBRATION,
    ENSEMBLE,
    ENSEMBLE_WEIGHTS,
    ENVIRONMENT,
    METRICS,
    MODELS,
    PREDICTIONS,
    SCORE_FILES,
    SPLITS,
    TRAINED,
    TRUST,
    buckets_csv,
    focus_split,
    prediction_file,
)


def read_predictions(model: str, split: str, averaged: bool, faces: int) -> np.ndarray:
    """Stage predict's (N, 2) array, checked against the split it claims to describe."""
    path = prediction_file(split, averaged, model)
    fix = f"rerun `dvc repro predict@{model}`"
    try:
        pred = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not readable ({type(error).__name__}); {fix}") from None
    if pred.shape != (faces, 2) or not np.isfinite(pred).all():
        raise UserError(
            f"{path}: {pred.shape} predictions, finite: {bool(np.isfinite(pred).all())}; the "
            f"{split} split has {faces} faces and needs (N, 2) finite values; {fix}"
        )
    return pred


def evaluate() -> None:
    params = P.load()
    flip = params.evaluate.flip_tta
    splits = {name: load_split(name) for name in SPLITS}
    focus = focus_split(len(splits["test"]))
    # flip averaging on and off -> model -> split -> (N, 2); evaluate.flip_tta picks the one
    # the metrics, the ensemble's weights and the report use; both are scored.
    preds = {
        averaged: {
            key: {
                name: read_predictions(key, name, averaged, len(split))
                for name, split in splits.items()
            }
            for key in TRAINED
        }
        for averaged in (True, False)
    }
    # The ensemble's weights per task are chosen on val (never test), then used everywhere.
    val = splits["val"]
    weights = ensemble_weights({k: preds[flip][k]["val"] for k in TRAINED}, val.age, val.gender)
    print(f"evaluate: ensemble weights chosen on val: {weights}")
    write_text(ENSEMBLE_WEIGHTS, json.dumps(weights, indent=2) + "\n")
    for table in preds.values():
        table[ENSEMBLE.key] = {
            s: combine({k: table[k][s] for k in TRAINED}, weights) for s in SPLITS
        }

    def score(table: dict) -> dict:
        return {
            model: {
                name: scores(
                    split.age, table[model][name][:, 0], split.gender, table[model][name][:, 1]
                )
                for name, split in splits.items()
            }
            for model in MODELS
        }

    scored = {averaged: score(table) for averaged, table in preds.items()}
    for averaged, path in SCORE_FILES.items():
        write_text(path, json.dumps(scored[averaged], indent=2) + "\n")
    metrics = scored[flip]
    write_text(METRICS, json.dumps(compared(metrics), indent=2) + "\n")
    write_text(ENVIRONMENT, json.dumps(describe(), indent=2) + "\n")

    # How much to trust one answer: ranges and temperatures fitted on val, measured on test.
    level, seed = params.evaluate.range_level, params.seed
    fitted = trust.fit({m: preds[flip][m]["val"] for m in MODELS}, val, level, seed)
    write_text(CALIBRATION, json.dumps(fitted, indent=2) + "\n")
    focused = {m: preds[flip][m][focus] for m in MODELS}
    measured = trust.measure(focused, splits[focus], fitted, params.evaluate.bootstrap, seed)
    ens = {"flip": preds[True][ENSEMBLE.key][focus], "plain": preds[False][ENSEMBLE.key][focus]}
    values = {
        k: per_face(splits[focus].age.astype("float64"), splits[focus].gender, p)
        for k, p in ens.items()
    }
    measured["flip_intervals"] = bootstrap(
        values, [("plain", "flip")], params.evaluate.bootstrap, seed
    )
    write_text(TRUST, json.dumps(measured, indent=2) + "\n")
    for model, m in measured["models"].items():
        g = m["gender"]
        print(
            f"evaluate: {model} {focus}: {level:.0%} age range ({m['method']}) covers "
            f"{m['coverage']:.1%}, mean width {m['mean_width']:.1f} years; gender ECE "
            f"{g['before']['ece']:.3f} -> {g['after']['ece']:.3f} after temperature scaling"
        )

    split = splits[focus]
    faces = pd.DataFrame({"name": split.name, "age": split.age, "gender": split.gender})
    tables = []
    for model in MODELS:
        pred = preds[flip][model][focus]
        faces[f"age_{model}"] = pred[:, 0].round(2)
        faces[f"gender_prob_{model}"] = pred[:, 1].round(4)
        faces[f"gender_{model}"] = (pred[:, 1] >= 0.5).astype(int)
        table = breakdown(split, pred)
        write_text(buckets_csv(model), table[table.kind == "bucket"].to_csv(index=False))
        tables.append(table.assign(model=model, split=focus))
    write_text(BREAKDOWN, pd.concat(tables).to_csv(index=False))
    write_text(PREDICTIONS, faces.to_csv(index=False))
    for model, block in metrics.items():
        m = block[focus]
        print(
            f"evaluate: {model} {focus}: gender {m['gender_accuracy']:.2%}, "
            f"age MAE {m['age_mae']:.2f}, within 5 years {m['age_within_5']:.1%}"
        )


def main() -> None:
    """evaluate(), its outputs put in place as one set: metrics.json never comes from
    another run than trust.json (a kill part-way leaves the previous set)."""
    with together():
        evaluate()


if __name__ == "__main__":
    run(main)
