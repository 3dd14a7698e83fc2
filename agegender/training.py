"""Compile, callbacks and fit: shared by model A and both phases of model B.

A `Trainer` owns one DVCLive run and the best weights seen, so several fit phases log on
one continuous step axis and the weights kept at the end are the best by val_loss over
all phases. DVCLive writes into a scratch folder that replaces the stage's folder only
when training ends, so an interrupted run leaves the previous results in place.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from dvclive import Live
from keras import ops

from agegender import distribute
from agegender.data import Split
from agegender.environment import record_times
from agegender.errors import UserError
from agegender.files import StagedFolder, save_model
from agegender.heads import copy_weights
from agegender.labels import MAX_AGE
from agegender.layout import FEATURES, PHASE2, TEACHER
from agegender.metric_table import COMPARED
from agegender.params import Fit, Loader, Loss, Train

FEATURE_BLOCK = 2048  # faces per feature pass written at a time (train.loader stream)

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


# Distillation gives an output two target columns, [label, soft target]: the loss learns from
# the last, the metrics score the first, so the curves still show accuracy against the truth.
# A plain target has one column, which is both.
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


def setup(seed: int, train: Train) -> dict:
    """Devices (train.distribute), seeds from params.yaml, deterministic ops where the backend
    offers them. Returns what the run records of its backend and devices."""
    record = distribute.start(train.distribute)
    keras.utils.set_random_seed(seed)
    if train.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    return record


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
    if any(len(a) != n for a in arrays.values()):
        raise UserError(
            f"{TEACHER}: holds {len(arrays['age'])} predictions for {n} training faces; "
            f"run `dvc repro` (stage teach) after changing model_a.teacher"
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


def size_schedule(epochs: int, sizes: Sequence[int], full: int) -> list[tuple[int, int]]:
    """[(image size, epochs)]: `epochs` split evenly over `sizes` and then `full`, which
    takes the remainder. No sizes: [(full, epochs)], one fit as without progressive resizing."""
    stages = [*sizes, full]
    each = epochs // len(stages)
    return [(size, each) for size in sizes] + [(full, epochs - each * len(sizes))]


def resized(images: np.ndarray, size: int, batch: int = 500) -> np.ndarray:
    """uint8 faces at size x size, smoothed first (antialias) as a smaller photo would be."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[3]), np.uint8)
    for i in range(0, len(images), batch):
        x = ops.image.resize(
            np.asarray(images[i : i + batch], "float32"), (size, size), antialias=True
        )
        out[i : i + batch] = np.clip(np.round(ops.convert_to_numpy(x)), 0, 255)
    return out


class Batches(keras.utils.PyDataset):
    """Batches of (memory-mapped) arrays, in a seeded order each epoch, or in order without
    a seed (validation, prediction).

    Only a batch at a time is read into memory, so a split may be larger than RAM, and a
    batch depends on the seed, the epoch and its index alone: any number of workers gives
    the same batches. `size` resizes each batch (progressive resizing).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: dict[str, np.ndarray] | None,
        batch_size: int,
        seed: int | None = None,
        epoch: int = 0,
        size: int | None = None,
        workers: int = 1,
    ):
        super().__init__(workers=workers)
        self.x, self.y, self.batch_size, self.size = x, y, batch_size, size
        self.seed, self.epoch = seed, epoch
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if self.seed is None:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        # sorted rows: a memory-mapped file is read forwards; the batch is the same set
        rows = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        x = np.asarray(self.x[rows])
        x = resized(x, self.size) if self.size else x
        if self.y is None:
            return x
        return x, {name: np.asarray(v[rows]) for name, v in self.y.items()}

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()


def inputs(
    x: np.ndarray,
    y: dict[str, np.ndarray] | None,
    batch_size: int,
    loader: Loader,
    seed: int | None = None,
    epoch: int = 0,
    size: int | None = None,
) -> dict:
    """The keyword arguments x (and y, batch_size) of fit, evaluate or predict under
    train.loader: the arrays as they are (resized first, for progressive resizing), or
    Batches reading them; `seed` shuffles the batches (training only)."""
    if loader.kind == "stream":
        return {"x": Batches(x, y, batch_size, seed, epoch, size, loader.workers)}
    x = resized(x, size) if size else x
    return {"x": x, "batch_size": batch_size} | ({} if y is None else {"y": y})


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


class _EpochLog(keras.callbacks.Callback):
    """Logs each epoch to DVCLive, keeps the best weights over all phases, times training.

    Not dvclive.keras.DVCLiveCallback: that one logs one fit() call, so model B's two phases
    (two fits, the first on the heads alone) would each restart its step axis or need
    resume=True, and it neither keeps the best weights across phases nor renames dldl's
    `age_probs_loss` to the age loss the plots show for both models.
    """

    def __init__(self, trainer: Trainer, phase: str):
        super().__init__()
        self.trainer, self.phase = trainer, phase
        self.keep_best = True  # False while progressive resizing trains below full size
        self.train_seconds = 0.0
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_test_begin(self, logs=None):  # validation starts: the training part is over
        if self._start:
            self.train_seconds += time.monotonic() - self._start
            self._start = 0.0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        live = self.trainer.live
        for key, value in logs.items():
            split, name = ("val", key[4:]) if key.startswith("val_") else ("train", key)
            if name in ("learning_rate", "lr"):
                continue
            if name == "age_probs_loss":  # dldl: the age loss is the distribution's
                name = "age_loss"
            live.log_metric(f"{split}/{name}", float(value))
        rate = self.model.optimizer.learning_rate
        live.log_metric("learning_rate", float(keras.ops.convert_to_numpy(rate)))
        live.log_metric("phase", 2 if self.phase == PHASE2 else 1)  # the report marks phase 2
        live.next_step()
        if self.keep_best:  # a val loss at a smaller size does not score the model saved
            self.trainer.keep_if_best(float(logs["val_loss"]))


def cached_features(
    extractor: keras.Model,
    head: keras.Model,
    train: Split,
    val: Split,
    batch_size: int,
    loader: Loader,
) -> tuple[tuple, tuple]:
    """((x, y), (val_x, val_y)) of backbone features: the faces and their mirror images.

    The frozen backbone gives the same features every epoch, so phase 1 computes them once
    (one forward pass, no backward) and then trains the heads in seconds. The features are
    about 4 kB a face: in memory with the arrays loader, in memory-mapped files with stream
    (written a block at a time into a scratch folder removed at exit), so that neither the
    images nor their features need fit in memory.
    """
    print(f"phase1: backbone features of {len(train)} faces, mirrored too", flush=True)
    folder = StagedFolder(FEATURES).tmp if loader.kind == "stream" else None

    def features(name: str, *parts: np.ndarray) -> np.ndarray:
        """The features of each part's faces, one part after the other."""
        if folder is None:
            return np.concatenate(
                [extractor.predict(**inputs(p, None, batch_size, loader), verbose=0) for p in parts]
            )
        shape = (sum(len(p) for p in parts), extractor.output_shape[-1])
        out = np.lib.format.open_memmap(folder / f"{name}.npy", "w+", np.float32, shape)
        row = 0
        for part in parts:
            for start in range(0, len(part), FEATURE_BLOCK):
                block = inputs(part[start : start + FEATURE_BLOCK], None, batch_size, loader)
                values = extractor.predict(**block, verbose=0)
                out[row : row + len(values)] = values
                row += len(values)
        out.flush()
        return out

    # a mirrored memory map is a view, no copy
    x = features("train", train.images, train.images[:, :, ::-1])
    y = {name: np.concatenate([v, v]) for name, v in targets(head, train).items()}
    return (x, y), (features("val", val.images), targets(head, val))


class Trainer:
    """One model, one DVCLive folder, any number of fit phases."""

    def __init__(
        self,
        model: keras.Model,
        live_dir: str | Path,
        train: Split,
        val: Split,
        run: dict | None = None,
        loader: Loader | None = None,
        seed: int = 0,
    ):
        """`run`: what setup() returned (backend, devices), kept in the summary;
        `loader` (train.loader, arrays when None) and `seed`: how fit reads the faces."""
        for name, split in (("train", train), ("val", val)):
            if len(np.unique(split.gender)) < 2:
                raise UserError(
                    f"the {name} split holds faces of one gender only; gender classification "
                    f"needs both in train and val: use an archive with both, or a larger "
                    f"data.subset_size / data.val_size"
                )
        self.model, self.train, self.val = model, train, val
        self.loader, self.seed = loader or Loader("arrays", 1), seed
        self.live_dir = Path(live_dir)
        # DVCLive writes into a temporary folder that replaces live_dir once the model is
        # saved; Ctrl-C or a crash leaves the previous run's folder as it was.
        self.staged = StagedFolder(self.live_dir)
        self.live = Live(str(self.staged.tmp), report=None, save_dvc_exp=False, dvcyaml=None)
        self.summary: dict[str, object] = {"distribute": run} if run else {}
        self.times: dict[str, object] = {}  # wall times: this machine's, kept out of the outputs
        self.epoch = 0
        self.best_loss = math.inf
        self.best_weights: list[np.ndarray] | None = None  # in memory: nothing to clean up

    def keep_if_best(self, val_loss: float) -> None:
        if val_loss < self.best_loss:
            self.best_loss, self.best_weights = val_loss, self.model.get_weights()

    def phase(
        self,
        name: str,
        fit: Fit,
        loss: Loss,
        model: keras.Model | None = None,
        data: tuple[tuple, tuple] | None = None,
        sizes: Sequence[int] = (),
    ) -> None:
        """Train `fit.epochs` more epochs at most, then go back to the best weights so far.

        `model` and `data` ((x, y), (val_x, val_y)) default to the whole model on the
        prepared images; phase 1 of model B passes its heads and cached features instead.
        `sizes`: progressive resizing, smaller image sizes to train (and validate) at first,
        one fit each on one learning-rate schedule; the best weights are chosen at full size.
        """
        if fit.epochs == 0:
            return
        model = model or self.model
        (x, y), val = data or (
            (self.train.images, targets(model, self.train)),
            (self.val.images, targets(model, self.val)),
        )
        steps = math.ceil(len(x) / fit.batch_size)
        compile_model(model, fit, loss, steps)
        log = _EpochLog(self, name)
        callbacks: list[keras.callbacks.Callback] = [
            log,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=fit.early_stopping_patience),
        ]
        if fit.schedule == "plateau":
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_loss",
                    factor=fit.reduce_lr_factor,
                    patience=fit.reduce_lr_patience,
                    min_lr=fit.learning_rate * 1e-3,
                )
            )
        print(
            f"{name}: {fit.optimizer} lr {fit.learning_rate:g}, up to {fit.epochs} epochs "
            f"on {len(x)} inputs",
            flush=True,
        )
        start = time.monotonic()
        (x, y, val), batch_size = distribute.local_share((x, y, val), fit.batch_size)
        epochs, full = 0, x.shape[1]
        for size, size_epochs in size_schedule(fit.epochs, sizes, full):
            if sizes:
                print(f"{name}: {size_epochs} epochs at {size} px", flush=True)
            log.keep_best = size == full
            at = size if sizes else None
            train_in = inputs(x, y, batch_size, self.loader, self.seed, self.epoch, at)
            val_in = inputs(*val, batch_size, self.loader, size=at)
            history = model.fit(
                **train_in,
                epochs=self.epoch + size_epochs,
                initial_epoch=self.epoch,
                validation_data=val_in["x"] if "y" not in val_in else (val_in["x"], val_in["y"]),
                shuffle=True,
                callbacks=callbacks,
                verbose=1 if sys.stdout.isatty() else 2,
            )
            done = len(history.history["loss"])
            self.epoch += done
            epochs += done
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        if model is not self.model:  # the heads trained alone: compile the whole to score it
            compile_model(self.model, fit, loss, steps)
        self.summary[name] = {"epochs": epochs, **self.evaluate(fit.batch_size)}
        self.times[name] = {
            "seconds": round(time.monotonic() - start, 1),
            "train_images_per_second": round(epochs * len(x) / max(log.train_seconds, 1e-9), 1),
        }

    def evaluate(self, batch_size: int) -> dict[str, float]:
        """Val metrics of the weights in the model now (the best so far, once restored)."""
        data = inputs(self.val.images, targets(self.model, self.val), batch_size, self.loader)
        logs = self.model.evaluate(**data, verbose=0, return_dict=True)
        # val_loss, then val_gender_accuracy and val_age_mae (Keras logs the outputs'
        # metrics as gender_accuracy and age_mae: metric_table's keys), as the report reads them
        return {
            "val_loss": round(float(logs["loss"]), 4),
            **{f"val_{s.key}": round(float(logs[s.key]), s.digits) for s in COMPARED},
        }

    def save(self, path: str | Path, serving: keras.Model) -> None:
        """Write the serving model with the best weights, then put the DVCLive folder in place."""
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        self.summary["best"] = self.evaluate(256)
        self.summary["epochs"] = self.epoch
        self.summary["parameters"] = int(serving.count_params())
        copy_weights(self.model, serving)
        save_model(serving, path)
        self.live.summary = self.summary
        self.live.make_summary()
        self.live.end()
        self.staged.commit()
        record_times(self.live_dir.name, self.times)
        print(f"saved {path}: {self.summary}; times {self.times}")
