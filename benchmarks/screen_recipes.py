"""Screen training recipes side by side: best val scores of each, one JSON line per recipe.

    python benchmarks/screen_recipes.py benchmarks/recipes.yaml --parallel 6 --minutes 6 \
        --out reports/ablations/gpu_screen.jsonl

Each recipe (a set of params.yaml changes, like `dvc exp run -S`) trains its stage in a
scratch folder of its own, on the prepared data of this checkout, in its own process, so
several share one GPU. A recipe that sets `seed` or a `data.` key prepares its own split
first. This is for choosing what to try with `dvc exp run`: it skips evaluate and keeps
nothing but the scores; `--score` adds the model's val and test scores as metrics.json has
them (flip-averaged per evaluate.flip_tta), for a stage that trains one model alone (A,
whose stage needs no other). On a GPU use KERAS_BACKEND=jax and set
XLA_PYTHON_CLIENT_PREALLOCATE=false so the processes share its memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from scratch import ROOT, checkout_env, write_params  # benchmarks/scratch.py

from agegender.layout import TRAINED


def score(folder: Path, stage: str) -> dict[str, float]:
    """val_acc, val_mae, test_acc, test_mae of the model the stage saved, as in metrics.json.

    Imports here: only --score needs Keras in this process."""
    from agegender import params as P
    from agegender.data import load_split
    from agegender.evaluate.inference import load, predict
    from agegender.evaluate.metrics import scores
    from agegender.metric_table import COMPARED

    model_file = next(m.file for m in TRAINED.values() if m.stage == stage)
    params = P.load(folder / "params.yaml")
    model = load(str(folder / model_file))
    flip, out = params.evaluate.flip_tta, {}
    for split in ("val", "test"):
        faces = load_split(split, folder / "data" / "prepared")
        pred = predict(model, faces.images, params.evaluate.batch_size, (flip,))[flip]
        got = scores(faces.age, pred[:, 0], faces.gender, pred[:, 1])
        out |= {f"{split}_{s.short}": got[s.key] for s in COMPARED}
    return out


def screen(
    recipe: dict,
    base: dict,
    scratch: Path,
    deadline: float,
    where: str,
    out: Path,
    scored: bool = False,
) -> dict | None:
    if time.time() > deadline:
        return None
    folder = scratch / recipe["name"]
    (folder / "data").mkdir(parents=True)
    own_split = any(key == "seed" or key.startswith("data.") for key in recipe["set"])
    if own_split:
        (folder / "data" / "raw").symlink_to(ROOT / "data" / "raw")
    else:
        (folder / "data" / "prepared").symlink_to(ROOT / "data" / "prepared")
    write_params(folder, {"train.deterministic": False, **recipe["set"]}, base)
    start = time.time()
    stages = ["prepare", recipe["stage"]] if own_split else [recipe["stage"]]
    with open(folder / "train.log", "w") as log:
        for stage in stages:
            rc = subprocess.call(
                [sys.executable, "-m", f"stages.{stage}"],
                cwd=folder,
                env=checkout_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            if rc:
                break
    row = {**recipe, "where": where, "minutes": round((time.time() - start) / 60, 1), "rc": rc}
    metrics = folder / "reports" / recipe["stage"] / "metrics.json"
    if rc == 0:
        row.update(json.loads(metrics.read_text())["best"])  # val_loss, val_gender_accuracy, ...
        if scored:
            row.update(score(folder, recipe["stage"]))
    with open(out, "a") as handle:  # one line each as it ends: a run cut off keeps these
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", type=Path)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=60, help="start no recipe after this")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--where", default=f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND')}")
    parser.add_argument("--score", action="store_true", help="val and test scores, flipped")
    args = parser.parse_args()
    recipes = yaml.safe_load(args.recipes.read_text())
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    deadline = time.time() + 60 * args.minutes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("")
    with (
        tempfile.TemporaryDirectory(prefix="screen-") as scratch,
        ThreadPoolExecutor(args.parallel) as pool,
    ):
        rows = pool.map(
            lambda r: screen(r, base, Path(scratch), deadline, args.where, args.out, args.score),
            recipes,
        )
        done = [row for row in rows if row]
    print(f"{len(done)} of {len(recipes)} recipes screened -> {args.out}")


if __name__ == "__main__":
    main()
