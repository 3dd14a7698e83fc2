"""Stage `evaluate`: both models (and their ensemble) on train, val and test.

Writes reports/metrics.json (the 12 numbers `dvc exp show` and `dvc metrics diff`
compare: val and test gender accuracy and age MAE of A, B and the ensemble),
reports/eval/scores_flip.json and scores_no_flip.json (every score, with and without
averaging the mirrored face's prediction), reports/eval/ensemble.json (the ensemble's
weights, chosen on val), reports/eval/environment.json (CPU and library versions),
breakdowns per age bucket, race and gender, and per-face
predictions for the plots.
"""

from __future__ import annotations

from agegender import runtime

runtime.configure()  # backend and threads from params.yaml, before anything imports Keras

import json
import time

import numpy as np
import pandas as pd

from agegender import params as P
from agegender.data import check_side, load_split
from agegender.environment import describe
from agegender.errors import run
from agegender.evaluate.inference import combine, ensemble_weights, load, predict
from agegender.evaluate.metrics import breakdown, compared, scores
from agegender.files import write_text
from agegender.layout import (
    BREAKDOWN,
    ENSEMBLE,
    ENSEMBLE_WEIGHTS,
    ENVIRONMENT,
    METRICS,
    MODELS,
    PREDICTIONS,
    SCORE_FILES,
    SPLITS,
    TRAINED,
    buckets_csv,
    focus_split,
)


def main() -> None:
    params = P.load()
    flip = params.evaluate.flip_tta
    splits = {name: load_split(name) for name in SPLITS}
    focus = focus_split(len(splits["test"]))
    # flip averaging on and off -> model -> split -> (N, 2); evaluate.flip_tta picks the one
    # the metrics, the ensemble's weights and the report use; both are scored.
    preds: dict[bool, dict[str, dict[str, np.ndarray]]] = {True: {}, False: {}}
    for key, info in TRAINED.items():
        model = load(str(info.file))
        for name, split in splits.items():
            check_side(split, model.input_shape[1], name, f"{info.file}'s input")
            start = time.monotonic()
            for averaged, pred in predict(model, split.images, params.evaluate.batch_size).items():
                preds[averaged].setdefault(key, {})[name] = pred
            rate = len(split) / max(time.monotonic() - start, 1e-9)
            print(
                f"evaluate: {key} on {name}: {len(split)} faces, {rate:.0f} faces/s (x2 for flip)"
            )
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


if __name__ == "__main__":
    run(main)
