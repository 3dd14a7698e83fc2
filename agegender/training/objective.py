"""What training minimises and how it is scored: losses, optimizers, targets, compile.

Shared by model A and both phases of model B. Distillation gives an output two target
columns, [label, soft target]: the loss learns from the last, the metrics score the first,
so the curves still show accuracy against the truth. A plain target has one column.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from agegender.data import Split
from agegender.errors import UserError
from agegender.labels import MAX_AGE
from agegender.layout import TEACHER
from agegender.params import Fit, Loss

OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": lambda **kw: keras.optimizers.SGD(momentum=0.9, nesterov=True, **kw),
}
AGE_LOSSES = {
    "mae": keras.losses.MeanAbsoluteError,
    "mse": keras.losses.MeanSquaredError,
    "huber": keras.losses.Huber,
}


class OnSoftTarget(keras.losses.Loss):
    """A Keras loss on the last target column."""

    def __init__(self, inner: keras.losses.Loss):
        super().__init__(name=inner.name)
        self.inner = inner

    def call(self, y_true, y_pred):
        return self.inner.call(y_true[:, -1:], y_pred)


class _OnLabel:
    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true[:, :1], y_pred, sample_weight)  # type: ignore[misc]


class LabelMAE(_OnLabel, keras.metrics.MeanAbsoluteError):
    """Age MAE against the true age (the first target column)."""


class LabelAccuracy(_OnLabel, keras.metrics.BinaryAccuracy):
    """Gender accuracy against the true label (the first target column)."""


def age_distribution(age, sigma: float):
    """(N, 1) ages -> (N, MAX_AGE + 1) Gaussians around them, each summing to 1."""
    ages = ops.arange(MAX_AGE + 1, dtype="float32")
    target = ops.exp(-0.5 * ops.square((ages[None, :] - ops.cast(age, "float32")) / sigma))
    return target / ops.sum(target, axis=1, keepdims=True)


def dldl_loss(sigma: float):
    """DLDL-v2: KL(Gaussian around the true age || predicted distribution) + L1 of its mean.

    The distribution term tells the model that 31 is nearly right for a 30-year-old, which
    a plain regression loss does not; the L1 term aligns the expectation we predict with.
    A target of MAX_AGE + 1 columns is the target distribution itself (distillation mixes
    in the teacher's age), and the L1 term then aims at that distribution's mean.
    """
    ages = ops.arange(MAX_AGE + 1, dtype="float32")

    def loss(y_true, probs):
        y_true = ops.cast(y_true, "float32")
        if y_true.shape[-1] == 1:  # (N, 1) ages
            target, age = age_distribution(y_true, sigma), y_true[:, 0]
        else:
            target, age = y_true, ops.sum(y_true * ages[None, :], axis=1)
        probs = ops.clip(probs, 1e-7, 1.0)
        kl = ops.sum(target * (ops.log(ops.maximum(target, 1e-7)) - ops.log(probs)), axis=1)
        expectation = ops.sum(probs * ages[None, :], axis=1)
        return kl + ops.abs(expectation - age)

    return loss


def targets(model: keras.Model, split: Split) -> dict[str, np.ndarray]:
    """Keras targets for each of the model's outputs (the age distribution learns from age)."""
    y = split.targets()
    return {name: y["age" if name == "age_probs" else name] for name in model.output}


def load_teacher(n: int) -> dict[str, np.ndarray]:
    """Stage teach's predictions for the n training faces."""
    try:
        arrays = {name: np.load(TEACHER / f"{name}.npy") for name in ("age", "gender")}
    except (OSError, ValueError) as error:
        raise UserError(f"{TEACHER}: unreadable ({error}); run `dvc repro` (stage teach)") from None
    shapes = {name: a.shape for name, a in arrays.items() if a.ndim != 1}
    if shapes:
        name, shape = next(iter(shapes.items()))
        raise UserError(
            f"{TEACHER / name}.npy: shape {shape}, not one value per training face ({n},); "
            f"rerun `dvc repro` from stage predict@model_b"
        )
    if any(len(a) != n for a in arrays.values()):
        raise UserError(
            f"{TEACHER}: holds {len(arrays['age'])} predictions for {n} training faces; "
            f"run `dvc repro` (stage teach) after changing model_a.teacher"
        )
    age, gender = arrays["age"], arrays["gender"]
    bad_age = ~np.isfinite(age) | (age < 0) | (age > 150)
    bad_gender = ~np.isfinite(gender) | (gender < 0) | (gender > 1)
    if bad_age.any() or bad_gender.any():
        which = "age.npy" if bad_age.any() else "gender.npy"
        count = int(bad_age.sum() if bad_age.any() else bad_gender.sum())
        raise UserError(
            f"{TEACHER / which}: {count} values that are not finite or out of range (ages "
            f"0-150, probabilities 0-1); rerun `dvc repro` from stage predict@model_b"
        )
    return arrays


def distilled(
    y: dict[str, np.ndarray], teacher: dict[str, np.ndarray], weight: float, sigma: float
) -> dict[str, np.ndarray]:
    """Targets a `weight` of the way from the labels to the teacher's predictions.

    Gender: [label, label mixed with the teacher's P(female)]. Age: under dldl, the mixture
    of the Gaussians around the true and the teacher's age; otherwise [age, mixed age]. The
    loss learns from the soft column, the metrics score the label (OnSoftTarget, _OnLabel).
    """
    out = dict(y)
    age = y["age_probs"] if "age_probs" in y else y["age"]  # (N, 1) true ages
    t_age = teacher["age"].astype("float32")[:, None]
    soft = (1 - weight) * y["gender"] + weight * teacher["gender"][:, None]
    out["gender"] = np.concatenate([y["gender"], soft], axis=1).astype("float32")
    if "age_probs" in y:
        mix = (1 - weight) * age_distribution(age, sigma) + weight * age_distribution(t_age, sigma)
        out["age_probs"] = np.asarray(ops.convert_to_numpy(mix), "float32")
    else:
        out["age"] = np.concatenate([age, (1 - weight) * age + weight * t_age], axis=1)
    return out


def compile_model(model: keras.Model, fit: Fit, loss: Loss, steps_per_epoch: int) -> None:
    rate: float | keras.optimizers.schedules.LearningRateSchedule = fit.learning_rate
    if fit.schedule == "cosine":
        warmup = fit.warmup_epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else fit.learning_rate,
            decay_steps=max(1, fit.epochs * steps_per_epoch - warmup),
            warmup_target=fit.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    # AdamW needs a number (0.0 is fine); the others skip the decay step entirely when None.
    decay = fit.weight_decay if fit.optimizer == "adamw" or fit.weight_decay else None
    optimizer = OPTIMIZERS[fit.optimizer](learning_rate=rate, weight_decay=decay)
    names = list(model.output)
    age_loss = (
        {"age_probs": dldl_loss(loss.age_sigma)}
        if "age_probs" in names
        else {"age": OnSoftTarget(AGE_LOSSES[loss.age]())}
    )
    losses = {
        **age_loss,
        "gender": OnSoftTarget(
            keras.losses.BinaryCrossentropy(label_smoothing=loss.label_smoothing)
        ),
    }
    model.compile(
        optimizer=optimizer,
        loss={name: losses.get(name) for name in names},
        loss_weights={  # an output without a loss (age, under dldl) gets a weight nobody uses
            name: loss.gender_weight if name == "gender" else loss.age_weight for name in names
        },
        metrics={"age": [LabelMAE(name="mae")], "gender": [LabelAccuracy(name="accuracy")]},
    )
