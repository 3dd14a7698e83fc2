"""What model A and model B share: raw uint8 pixels in, age and gender out.

Each model takes uint8 RGB images of data.image_size and returns
{"age": (N, 1) years, "gender": (N, 1) probability of female}. A builder makes two
versions of the same network: the training model puts augmentation (and, for the
label-distribution loss, the age distribution as a third output) around it; the serving
model is the bare network, written to the .keras file. It holds only Keras's built-in
layers, so `keras.saving.load_model` opens it in any Python without this project.
Input scaling and backbone preprocessing are layers of both, so training cannot drift
from serving. Keras 3 only: the same code runs on TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from agegender.labels import MAX_AGE
from agegender.models.augment import augment
from agegender.params import Augment

AGE_PRIOR = 33.0  # about UTKFace's mean age: a linear age head starts there, not at 0


def pixels_in(
    image_size: int | None, aug: Augment, seed: int, serving: bool
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The uint8 input and float [0, 255] pixels, augmented in the training model.

    image_size None takes any size (progressive resizing trains on smaller images first).
    """
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="to_float")(inputs)
    return inputs, x if serving else augment(x, aug, seed)


def age_outputs(x: keras.KerasTensor, head: str) -> dict[str, keras.KerasTensor]:
    """Age in years (float32 even under mixed precision), and the age distribution if any.

    "expectation" predicts a distribution over ages 0..MAX_AGE and returns its mean:
    smoother to learn from few faces than one linear unit, and what the label-distribution
    loss trains directly.
    """
    if head == "linear":
        age = layers.Dense(
            1, bias_initializer=keras.initializers.Constant(AGE_PRIOR), dtype="float32", name="age"
        )(x)
        return {"age": age}
    probs = layers.Dense(MAX_AGE + 1, activation="softmax", dtype="float32", name="age_probs")(x)
    ages = np.arange(MAX_AGE + 1, dtype="float32").reshape(-1, 1)
    expectation = layers.Dense(
        1,
        use_bias=False,
        trainable=False,
        kernel_initializer=keras.initializers.Constant(ages),
        dtype="float32",
        name="age",
    )
    return {"age": expectation(probs), "age_probs": probs}


def outputs(age: keras.KerasTensor, gender: keras.KerasTensor, head: str, keep_probs: bool):
    """The model's output dict; the age distribution only where the loss needs it."""
    ages = age_outputs(age, head)
    out = {
        "age": ages["age"],
        "gender": layers.Dense(1, activation="sigmoid", dtype="float32", name="gender")(gender),
    }
    if keep_probs and "age_probs" in ages:
        out["age_probs"] = ages["age_probs"]
    return out


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy weights layer by layer: training model -> serving model.

    Both come from one builder, so the layers with weights line up in order (augmentation
    has none); a backbone's name depends on its weights, hence order, not names.
    """
    pairs = zip(
        [lyr for lyr in source.layers if lyr.weights],
        [lyr for lyr in target.layers if lyr.weights],
        strict=True,
    )
    for one, other in pairs:
        other.set_weights(one.get_weights())
