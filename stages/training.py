"""Compile, callbacks and fit: shared by model A and both phases of model B.

A `Trainer` owns one DVCLive run and one best-model checkpoint, so several fit
phases log on one continuous step axis and the weights kept at the end are the best
by val_loss over all phases.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import keras
from dvclive import Live

from stages.data import Split
from stages.errors import atomic_path
from stages.params import Fit, Loss, Train

OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": lambda **kw: keras.optimizers.SGD(momentum=0.9, nesterov=True, **kw),
}
AGE_LOSSES = {"mae": "mean_absolute_error", "mse": "mean_squared_error", "huber": "huber"}


def setup(seed: int, train: Train) -> None:
    """Seeds from params.yaml; deterministic ops where the backend offers them."""
    keras.utils.set_random_seed(seed)
    if train.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")


def compile_model(model: keras.Model, fit: Fit, loss: Loss, steps_per_epoch: int) -> None:
    rate: float | keras.optimizers.schedules.LearningRateSchedule = fit.learning_rate
    if fit.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            fit.learning_rate, decay_steps=max(1, fit.epochs * steps_per_epoch)
        )
    # AdamW needs a number (0.0 is fine); the others skip the decay step entirely when None.
    decay = fit.weight_decay if fit.optimizer == "adamw" or fit.weight_decay else None
    optimizer = OPTIMIZERS[fit.optimizer](learning_rate=rate, weight_decay=decay)
    model.compile(
        optimizer=optimizer,
        loss={
            "age": AGE_LOSSES[loss.age],
            "gender": keras.losses.BinaryCrossentropy(label_smoothing=loss.label_smoothing),
        },
        loss_weights={"age": loss.age_weight, "gender": loss.gender_weight},
        metrics={
            "age": [keras.metrics.MeanAbsoluteError(name="mae")],
            "gender": [keras.metrics.BinaryAccuracy(name="accuracy")],
        },
    )


class _EpochLog(keras.callbacks.Callback):
    """Logs each epoch's train and val metrics to DVCLive and times the training part."""

    def __init__(self, live: Live, phase: str):
        super().__init__()
        self.live, self.phase = live, phase
        self.train_seconds = 0.0
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_test_begin(self, logs=None):  # validation starts: the training part is over
        if self._start:
            self.train_seconds += time.monotonic() - self._start
            self._start = 0.0

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            split, name = ("val", key[4:]) if key.startswith("val_") else ("train", key)
            if name in ("learning_rate", "lr"):
                continue
            self.live.log_metric(f"{split}/{name}", float(value))
        rate = self.model.optimizer.learning_rate
        self.live.log_metric("learning_rate", float(keras.ops.convert_to_numpy(rate)))
        self.live.log_metric("phase", 1 if self.phase != "phase2" else 2)
        self.live.next_step()


class Trainer:
    """One model, one DVCLive folder, any number of fit phases."""

    def __init__(self, model: keras.Model, live_dir: str, train: Split, val: Split):
        self.model, self.train, self.val = model, train, val
        self.live = Live(live_dir, report=None, save_dvc_exp=False, dvcyaml=None)
        self.summary: dict[str, object] = {}
        self.epoch = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="agegender-")
        self.best_path = os.path.join(self._tmp.name, "best.weights.h5")
        # One instance for all phases: it remembers the best val_loss across them.
        self.best = keras.callbacks.ModelCheckpoint(
            self.best_path, monitor="val_loss", save_best_only=True, save_weights_only=True
        )

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()

    def phase(self, name: str, fit: Fit, loss: Loss) -> None:
        """Compile with this phase's optimizer and train `fit.epochs` more epochs at most."""
        if fit.epochs == 0:
            return
        steps = math.ceil(len(self.train) / fit.batch_size)
        compile_model(self.model, fit, loss, steps)
        log = _EpochLog(self.live, name)
        callbacks: list[keras.callbacks.Callback] = [
            log,
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=fit.early_stopping_patience, restore_best_weights=True
            ),
            self.best,
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
            f"{name}: {fit.optimizer} lr {fit.learning_rate:g}, up to {fit.epochs} epochs",
            flush=True,
        )
        start = time.monotonic()
        history = self.model.fit(
            self.train.images,
            self.train.targets(),
            batch_size=fit.batch_size,
            epochs=self.epoch + fit.epochs,
            initial_epoch=self.epoch,
            validation_data=(self.val.images, self.val.targets()),
            shuffle=True,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        epochs = len(history.history["loss"])
        self.epoch += epochs
        scores = self.evaluate(fit.batch_size)
        self.summary[name] = {
            "epochs": epochs,
            "seconds": round(time.monotonic() - start, 1),
            "train_images_per_second": round(
                epochs * len(self.train) / max(log.train_seconds, 1e-9), 1
            ),
            **scores,
        }

    def evaluate(self, batch_size: int) -> dict[str, float]:
        """Val metrics of the weights in the model now (the phase's best, once restored)."""
        logs = self.model.evaluate(
            self.val.images, self.val.targets(), batch_size=batch_size, verbose=0, return_dict=True
        )
        return {
            "val_loss": round(float(logs["loss"]), 4),
            "val_gender_accuracy": round(float(logs["gender_accuracy"]), 4),
            "val_age_mae": round(float(logs["age_mae"]), 3),
        }

    def save(self, path: str | Path) -> None:
        """Keep the best weights over all phases and write the model atomically."""
        if os.path.exists(self.best_path):
            with warnings.catch_warnings():  # the checkpoint holds an older optimizer's state
                warnings.simplefilter("ignore")
                self.model.load_weights(self.best_path)
        self.summary["best"] = self.evaluate(256)
        self.summary["epochs"] = self.epoch
        self.summary["parameters"] = int(self.model.count_params())
        with atomic_path(path) as tmp:
            self.model.save(tmp)
        self.live.summary = self.summary
        self.live.make_summary()
        self.live.end()
        print(f"saved {path}: {self.summary}")
