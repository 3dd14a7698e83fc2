"""The training loop shared by model A and both phases of model B.

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

from agegender.data import Split
from agegender.environment import record_times
from agegender.errors import UserError
from agegender.files import StagedFolder, save_model
from agegender.layout import PHASE2
from agegender.metric_table import COMPARED
from agegender.models.heads import copy_weights
from agegender.params import Fit, Loader, Loss, Train
from agegender.training import distribute
from agegender.training.batches import inputs, size_schedule
from agegender.training.objective import compile_model, targets


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


def fit_callbacks(fit: Fit) -> list[keras.callbacks.Callback]:
    """What every fit phase stops and slows with: NaN, early stopping and, with the plateau
    schedule, ReduceLROnPlateau, all on val_loss (scripts/tune.py's trials use them too)."""
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.TerminateOnNaN(),  # then the check after fit stops the stage
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
    return callbacks


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
        extra: Sequence[keras.callbacks.Callback] = (),
    ) -> None:
        """Train `fit.epochs` more epochs at most, then go back to the best weights so far.

        `model` and `data` ((x, y), (val_x, val_y)) default to the whole model on the
        prepared images; phase 1 of model B passes its heads and cached features instead.
        `sizes`: progressive resizing, smaller image sizes to train (and validate) at first,
        one fit each on one learning-rate schedule; the best weights are chosen at full size.
        `extra`: more callbacks (a search's pruning).
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
        callbacks = [log, *fit_callbacks(fit), *extra]
        print(
            f"{name}: {fit.optimizer} lr {fit.learning_rate:g}, up to {fit.epochs} epochs "
            f"on {len(x)} inputs",
            flush=True,
        )
        start = time.monotonic()
        (x, y, val), batch_size = distribute.local_share((x, y, val), fit.batch_size)
        x, y = distribute.whole_batches((x, y), batch_size, self.devices(), f"{name} train")
        val = distribute.whole_batches(val, batch_size, self.devices(), f"{name} val")
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
            losses = history.history["loss"]
            if not all(math.isfinite(v) for v in losses):
                raise UserError(
                    f"{name}: the training loss became {losses[-1]} at epoch "
                    f"{self.epoch + len(losses)}; nothing was saved (the previous model stays). "
                    f"Lower the learning rate or check the targets"
                )
            done = len(losses)
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

    def devices(self) -> int:
        return int((self.summary.get("distribute") or {}).get("devices", 1))  # type: ignore[union-attr]

    def evaluate(self, batch_size: int) -> dict[str, float]:
        """Val metrics of the weights in the model now (the best so far, once restored), on
        val cut as in training: a last batch that does not split over the devices (1,000
        faces in batches of 256 over 7) once ended the run after its last epoch."""
        val = (self.val.images, targets(self.model, self.val))
        images, y = distribute.whole_batches(val, batch_size, self.devices(), "val")
        data = inputs(images, y, batch_size, self.loader)
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
