"""Stage `predict@KEY`: one trained model's predictions on train, val and test.

    python -m stages.predict model_a      # dvc.yaml runs it once per model (foreach)

Writes data/predictions/KEY/<split>_<flip|plain>.npy: (N, 2) float32 age and P(female),
with and without averaging the mirrored face's prediction. Each model has its own stage and
its own cached output, so retraining model A never recomputes model B's predictions; evaluate
and teach read these arrays and need no Keras.
"""

from __future__ import annotations

from agegender import runtime

runtime.configure()  # backend and threads from params.yaml, before anything imports Keras

import sys
import time

import numpy as np

from agegender import params as P
from agegender.data import check_side, load_split
from agegender.errors import UserError, run
from agegender.evaluate.inference import load, predict
from agegender.files import atomic_folder
from agegender.layout import SPLITS, TRAINED, prediction_file, predictions_dir


def main(key: str | None = None) -> None:
    if key is None:
        key = sys.argv[1] if len(sys.argv) == 2 else ""
    if key not in TRAINED:
        raise UserError(f"usage: python -m stages.predict {{{','.join(TRAINED)}}} (got {key!r})")
    params = P.load()
    info = TRAINED[key]
    model = load(str(info.file))
    with atomic_folder(predictions_dir(key)) as tmp:
        for name in SPLITS:
            split = load_split(name)
            check_side(split, model.input_shape[1], name, f"{info.file}'s input")
            start = time.monotonic()
            for averaged, pred in predict(model, split.images, params.evaluate.batch_size).items():
                np.save(tmp / prediction_file(name, averaged).name, pred, allow_pickle=False)
            rate = len(split) / max(time.monotonic() - start, 1e-9)
            print(
                f"predict: {info.name} on {name}: {len(split)} faces, {rate:.0f} faces/s (x2: flip)"
            )


if __name__ == "__main__":
    run(main)
