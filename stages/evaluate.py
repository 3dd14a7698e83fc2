"""Stage `evaluate`: both models (and their ensemble) on train, val and test.

Writes reports/metrics.json (the numbers `dvc metrics diff` compares),
reports/eval/no_tta.json (the same without flip averaging), breakdowns per age bucket,
race and gender, and per-face predictions for the plots.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stages import params as P
from stages.data import Split, load_split
from stages.errors import run, write_text
from stages.metrics import scores
from stages.models import load
from stages.utkface import AGE_BUCKETS, RACES, age_bucket

MODELS = {"model_a": "models/age_gender_A.keras", "model_b": "models/age_gender_B.keras"}
SPLITS = ("train", "val", "test")
METRICS = Path("reports/metrics.json")
EVAL = Path("reports/eval")


def predict(model, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(plain, flipped) predictions, each (N, 2): age and gender probability.

    Batched over a memory-mapped split, so memory stays flat however big it is.
    """
    plain, flipped = [], []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size])
        for out, x in ((plain, batch), (flipped, batch[:, :, ::-1])):
            y = model.predict_on_batch(x)
            out.append(np.concatenate([np.asarray(y["age"]), np.asarray(y["gender"])], axis=1))
    empty = np.zeros((0, 2), "float32")
    return (np.concatenate(plain) if plain else empty), (
        np.concatenate(flipped) if flipped else empty
    )


def breakdown(split: Split, pred: np.ndarray) -> pd.DataFrame:
    """Age MAE and gender accuracy per age bucket, race and gender."""
    frame = pd.DataFrame(
        {
            "bucket": np.array(AGE_BUCKETS)[age_bucket(split.age)],
            "race": [RACES[r] if r >= 0 else "Unknown" for r in split.race],
            "gender": np.where(split.gender == 1, "female", "male"),
            "abs_error": np.abs(pred[:, 0] - split.age),
            "correct": (pred[:, 1] >= 0.5) == (split.gender == 1),
        }
    )
    rows = []
    for kind in ("bucket", "race", "gender"):
        for group, part in frame.groupby(kind, sort=False):
            rows.append(
                {
                    "kind": kind,
                    "group": group,
                    "n": len(part),
                    "age_mae": round(part.abs_error.mean(), 3),
                    "gender_accuracy": round(part.correct.mean(), 4),
                }
            )
    order = {"bucket": AGE_BUCKETS, "race": [*RACES, "Unknown"], "gender": ["male", "female"]}
    table = pd.DataFrame(rows)
    table["order"] = [order[k].index(g) for k, g in zip(table.kind, table.group, strict=True)]
    return table.sort_values(["kind", "order"]).drop(columns="order").reset_index(drop=True)


def main() -> None:
    params = P.load()
    flip = params.evaluate.flip_tta
    splits = {name: load_split(name) for name in SPLITS}
    focus = "test" if len(splits["test"]) else "val"  # the split the breakdowns describe
    preds: dict[str, dict[str, np.ndarray]] = {}  # model -> split -> (N, 2)
    other: dict[str, dict[str, np.ndarray]] = {}  # the same without/with flip averaging
    for key, path in MODELS.items():
        model = load(path)
        preds[key], other[key] = {}, {}
        for name, split in splits.items():
            start = time.monotonic()
            plain, flipped = predict(model, split.images, params.evaluate.batch_size)
            averaged = (plain + flipped) / 2
            preds[key][name], other[key][name] = (averaged, plain) if flip else (plain, averaged)
            rate = len(split) / max(time.monotonic() - start, 1e-9)
            print(
                f"evaluate: {key} on {name}: {len(split)} faces, {rate:.0f} faces/s (x2 for flip)"
            )
    for table in (preds, other):
        table["ensemble"] = {s: (table["model_a"][s] + table["model_b"][s]) / 2 for s in SPLITS}

    def report(table: dict) -> dict:
        return {
            model: {
                name: scores(
                    split.age, table[model][name][:, 0], split.gender, table[model][name][:, 1]
                )
                for name, split in splits.items()
            }
            for model in table
        }

    metrics = report(preds)
    write_text(METRICS, json.dumps(metrics, indent=2) + "\n")
    label = "no_tta" if flip else "flip_tta"
    write_text(
        EVAL / "other_tta.json", json.dumps({"variant": label, **report(other)}, indent=2) + "\n"
    )

    split = splits[focus]
    faces = pd.DataFrame({"name": split.name, "age": split.age, "gender": split.gender})
    tables = []
    for model in preds:
        pred = preds[model][focus]
        faces[f"age_{model}"] = pred[:, 0].round(2)
        faces[f"gender_prob_{model}"] = pred[:, 1].round(4)
        faces[f"gender_{model}"] = (pred[:, 1] >= 0.5).astype(int)
        table = breakdown(split, pred)
        write_text(EVAL / f"{model}_buckets.csv", table[table.kind == "bucket"].to_csv(index=False))
        tables.append(table.assign(model=model, split=focus))
    write_text(EVAL / "breakdown.csv", pd.concat(tables).to_csv(index=False))
    write_text(EVAL / "predictions.csv", faces.to_csv(index=False))
    for model, block in metrics.items():
        m = block[focus]
        print(
            f"evaluate: {model} {focus}: gender {m['gender_accuracy']:.2%}, "
            f"age MAE {m['age_mae']:.2f}, within 5 years {m['age_within_5']:.1%}"
        )


if __name__ == "__main__":
    run(main)
