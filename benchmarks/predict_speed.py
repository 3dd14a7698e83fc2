"""Prediction throughput of models A and B on the validation faces: images/s.

    python benchmarks/predict_speed.py [--models-dir models] [--prepared data/prepared] [--n 1000]
                                       [--batch-size 64] [--forward] [--tflite] [--untrained]

For each model it times the whole predict tool: the faces are written as 200 px JPEGs
(UTKFace's size) to a temporary folder, then `agegender.serve.predict.predict_files` decodes them in
its thread pool and predicts with flip averaging, as `agegender-predict FOLDER` does.
`--forward` also times the forward pass alone on the prepared arrays, several ways, to
show where the time goes; `--tflite` exports each model (`--export`) and times the tool
running the .tflite file. `--untrained` builds the models from params.yaml with random
weights when none are trained yet: the speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from agegender import params as P
from agegender.data import load_split
from agegender.evaluate.inference import load, load_model
from agegender.evaluate.inference import predict as evaluate_predict
from agegender.layout import MODEL_A, MODEL_B, PREPARED
from agegender.models.model_a import build_model_a
from agegender.models.model_b import build_model_b
from agegender.serve.export import export
from agegender.serve.predict import predict_files

JPEG_SIDE = 200  # UTKFace's aligned-and-cropped faces are 200 x 200 JPEGs


def rate(fn: Callable[[], object], n: int, repeats: int = 2) -> float:
    """Best of `repeats` timed runs after one warm-up (tracing happens there), images/s."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return n / best


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_rates(model, images: np.ndarray, batch_size: int) -> dict[str, float]:
    """The forward pass alone, flip averaging included (2 passes per image), several ways."""
    import tensorflow as tf

    n = len(images)
    compiled = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def loop(call: Callable[[np.ndarray], object]) -> None:
        for start in range(0, n, batch_size):
            batch = images[start : start + batch_size]
            call(batch)
            call(batch[:, :, ::-1])

    return {
        "evaluate.predict (predict_on_batch)": rate(
            lambda: evaluate_predict(model, images, batch_size), n
        ),
        "model(x, training=False), eager": rate(
            lambda: loop(lambda x: model(x, training=False)), n
        ),
        "tf.function(model(x, training=False))": rate(lambda: loop(compiled), n),
        "model.predict(x, batch_size)": rate(
            lambda: [
                model.predict(x, batch_size=batch_size, verbose=0)
                for x in (images, images[:, :, ::-1])
            ],
            n,
        ),
    }


def write_jpegs(images: np.ndarray, folder: Path) -> list[str]:
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(image).resize((JPEG_SIDE, JPEG_SIDE), Image.Resampling.BICUBIC).save(
            path, quality=95
        )
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=MODEL_B.file.parent)
    parser.add_argument("--prepared", type=Path, default=PREPARED)
    parser.add_argument("--n", type=int, default=1000, help="validation faces to use")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="decoding threads")
    parser.add_argument("--forward", action="store_true", help="also time the forward pass")
    parser.add_argument("--tflite", action="store_true", help="also time the exported .tflite")
    parser.add_argument("--untrained", action="store_true", help="random weights, params.yaml")
    args = parser.parse_args()

    val = load_split("val", args.prepared)
    images = np.asarray(val.images[: args.n])
    n = len(images)
    if args.untrained:
        params = P.load()
        size = images.shape[1]
        b = dataclasses.replace(params.model_b, weights=None)  # nothing to download
        models = {"A": build_model_a(params.model_a, size, 0), "B": build_model_b(b, size, 0)}
    else:
        models = {m.short: load(str(args.models_dir / m.file.name)) for m in (MODEL_A, MODEL_B)}
    print(
        f"{n} val faces at {images.shape[1]} px, batch {args.batch_size}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(images, Path(tmp))
        for name, model in models.items():
            if args.forward:
                for way, r in forward_rates(model, images, args.batch_size).items():
                    print(f"model {name}: forward, flip averaged, {way}: {r:.0f} images/s")
            runs = [(name, model)]
            if args.tflite:
                export(model, Path(tmp) / name)
                runs.append(
                    (f"{name} (.tflite)", load_model(str(Path(tmp) / name / "model.tflite")))
                )
            for (label, m), flip in itertools.product(runs, (True, False)):

                def tool(m=m, flip=flip) -> None:
                    for _ in predict_files(
                        paths, [m], flip=flip, batch_size=args.batch_size, workers=args.workers
                    ):
                        pass

                how = "flip averaged" if flip else "no flip"
                print(f"model {label}: JPEG files -> records, {how}: {rate(tool, n):.0f} images/s")


if __name__ == "__main__":
    main()
