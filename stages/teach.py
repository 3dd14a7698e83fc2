"""Stage `teach`: model B's predictions on the training faces, for distilling B into A.

With model_a.teacher: model_b, it copies B's flip-averaged age and P(female) for every
training face from stage predict@model_b into data/teacher/{age,gender}.npy; train_a mixes
them into its targets. With none it writes empty arrays, whose bytes never change:
retraining B then leaves A alone, because DVC reruns train_a only when this output's hash
changes.
"""

from __future__ import annotations

import numpy as np

from agegender import params as P
from agegender.errors import run
from agegender.files import atomic_path
from agegender.layout import MODEL_B, TEACHER, prediction_file


def main() -> None:
    params = P.load()
    if params.model_a.teacher == "none":
        arrays = {"age": np.zeros(0, "float32"), "gender": np.zeros(0, "float32")}
    else:
        # stage predict@model_b's flip-averaged predictions on the training faces
        both = np.load(prediction_file("train", True, MODEL_B.key), allow_pickle=False)
        arrays = {"age": both[:, 0], "gender": both[:, 1]}
    TEACHER.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        with atomic_path(TEACHER / f"{name}.npy") as tmp:
            np.save(tmp, np.ascontiguousarray(array, "float32"), allow_pickle=False)
    print(f"teach: {params.model_a.teacher}: {len(arrays['age'])} soft targets in {TEACHER}/")


if __name__ == "__main__":
    run(main)
