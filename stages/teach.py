"""Stage `teach`: model B's predictions on the training faces, for distilling B into A.

With model_a.teacher: model_b, it writes B's flip-averaged age and P(female) for every
training face (data/teacher/{age,gender}.npy); train_a mixes them into its targets. With
none it reads no model and writes empty arrays, whose bytes never change: retraining B then
leaves A alone, because DVC reruns train_a only when this output's hash changes.
"""

from __future__ import annotations

from agegender import runtime

runtime.configure()  # backend and threads from params.yaml, before anything imports Keras

import numpy as np

from agegender import params as P
from agegender.data import load_split
from agegender.errors import run
from agegender.evaluate.inference import load, predict
from agegender.files import atomic_path
from agegender.layout import MODEL_B, TEACHER

BATCH_SIZE = 128  # prediction only: the numbers do not depend on it


def main() -> None:
    params = P.load()
    if params.model_a.teacher == "none":
        arrays = {"age": np.zeros(0, "float32"), "gender": np.zeros(0, "float32")}
    else:
        train = load_split("train")
        model = load(str(MODEL_B.file))
        print(f"teach: model B on {len(train)} training faces (and their mirror images)")
        both = predict(model, train.images, BATCH_SIZE, flips=(True,))[True]
        arrays = {"age": both[:, 0], "gender": both[:, 1]}
    TEACHER.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        with atomic_path(TEACHER / f"{name}.npy") as tmp:
            np.save(tmp, np.ascontiguousarray(array, "float32"), allow_pickle=False)
    print(f"teach: {params.model_a.teacher}: {len(arrays['age'])} soft targets in {TEACHER}/")


if __name__ == "__main__":
    run(main)
