"""Screen training recipes side by side: best val scores of each, one JSON line per recipe.

    python benchmarks/screen_recipes.py benchmarks/recipes.yaml --parallel 6 --minutes 6 \
        --out reports/ablations/gpu_screen.jsonl

Each recipe (a set of params.yaml changes, like `dvc exp run -S`) trains its stage in a
scratch folder of its own, on the prepared data of this checkout, in its own process, so
several share one GPU. This is for choosing what to try with `dvc exp run`: it skips
evaluate and keeps nothing but the scores. On a GPU use KERAS_BACKEND=jax and set
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

from agegender.typed_yaml import set_dotted

ROOT = Path(__file__).resolve().parents[1]


def screen(
    recipe: dict, base: dict, scratch: Path, deadline: float, where: str, out: Path
) -> dict | None:
    if time.time() > deadline:
        return None
    folder = scratch / recipe["name"]
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "prepared").symlink_to(ROOT / "data" / "prepared")
    raw = json.loads(json.dumps(base))
    raw["train"]["deterministic"] = False
    for key, value in recipe["set"].items():
        set_dotted(raw, f"{key}={json.dumps(value)}")
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # stages/ from a scratch folder
    start = time.time()
    with open(folder / "train.log", "w") as log:
        rc = subprocess.call(
            [sys.executable, "-m", f"stages.{recipe['stage']}"],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    row = {**recipe, "where": where, "minutes": round((time.time() - start) / 60, 1), "rc": rc}
    metrics = folder / "reports" / recipe["stage"] / "metrics.json"
    if rc == 0:
        row.update(json.loads(metrics.read_text())["best"])  # val_loss, val_gender_accuracy, ...
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
            lambda r: screen(r, base, Path(scratch), deadline, args.where, args.out), recipes
        )
        done = [row for row in rows if row]
    print(f"{len(done)} of {len(recipes)} recipes screened -> {args.out}")


if __name__ == "__main__":
    main()
