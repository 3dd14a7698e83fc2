"""Training on several devices: keras.distribution's DataParallel on the JAX backend.

`train.distribute` in params.yaml picks the backend and the number of devices. The stages
call `runtime.configure()` before anything imports Keras (KERAS_BACKEND is read once, at
Keras's import; it also asks XLA for the virtual CPU devices), then `start()` before building
a model. With devices > 1 every variable is
replicated and each batch is split over the devices, as one SPMD program that XLA compiles:
BatchNorm's batch statistics and the random augmentation are drawn over the global batch, so
replicas see different augmentations and the same statistics, and one device and several
give the same losses up to float rounding (tests/test_distributed.py).

Several hosts: start one process per host with KERAS_DISTRIBUTION_JOB_ADDRESSES (all hosts'
host:port, comma-separated), KERAS_DISTRIBUTION_NUM_PROCESSES and
KERAS_DISTRIBUTION_PROCESS_ID set; `start()` then calls keras.distribution.initialize(), and
`devices` counts the devices of all hosts. No TensorFlow fallback: Keras 3 distributes on
JAX (MultiWorkerMirroredStrategy is not supported, keras#20585).
"""

from __future__ import annotations

import dataclasses
import os

from agegender import params as P
from agegender import runtime
from agegender.errors import UserError

MULTI_HOST = "KERAS_DISTRIBUTION_NUM_PROCESSES"  # set: this is one of several processes


def start(d: P.Distribute) -> dict:
    """Spread training over `d.devices` devices (from here on, models are built replicated);
    returns what the run records: backend, device count and kind (the machine's own facts,
    which do not decide the bytes, go to environment.record_times)."""
    import keras

    if keras.backend.backend() != d.backend:
        raise UserError(
            f"train.distribute.backend is {d.backend} but Keras runs on "
            f"{keras.backend.backend()}; the stage must call runtime.configure() "
            f"before importing Keras"
        )
    if os.environ.get(MULTI_HOST):
        keras.distribution.initialize()  # reads the KERAS_DISTRIBUTION_* variables
    devices = keras.distribution.list_devices()
    if d.devices > 1:
        if len(devices) < d.devices:
            raise UserError(
                f"train.distribute.devices is {d.devices} but this machine has "
                f"{len(devices)} ({', '.join(devices[:4])}{', ...' if len(devices) > 4 else ''}; "
                f"on CPUs at most {runtime.VIRTUAL_PER_CORE} virtual devices per core); lower it"
            )
        devices = devices[: d.devices]
        # Several processes: each feeds its own share of every batch (local_share), so Keras
        # must not split the arrays again (it would ask for a tf.data.Dataset).
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=devices, auto_shard_dataset=not processes())
        )
    return {
        "backend": d.backend,
        "devices": d.devices,
        "device_kind": devices[0].split(":")[0],
        "processes": processes() or 1,
    }


def processes() -> int:
    """How many processes train together (KERAS_DISTRIBUTION_NUM_PROCESSES); 0 when one."""
    count = int(os.environ.get(MULTI_HOST) or 1)
    return count if count > 1 else 0


def local_share(data, batch_size: int):
    """(this process's share of `data`, of the batch): every `count`-th row from its own id
    when several processes train, so that the processes' shares of a batch make the global
    batch; (data, batch_size) when one process trains. `data`: arrays, or dicts of them."""
    count = processes()
    if not count:
        return data, batch_size
    if batch_size % count:
        raise UserError(
            f"a batch of {batch_size} does not split over {count} processes; change batch_size"
        )
    index = int(os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID") or 0)

    def share(value):
        if isinstance(value, dict):
            return {key: share(v) for key, v in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(share(v) for v in value)
        return value[index::count]

    return share(data), batch_size // count


def whole_batches(data, batch_size: int, devices: int, name: str):
    """`data` (arrays, or tuples and dicts of them) cut so that its last, partial batch splits
    evenly over the devices (a batch of 16 over 7 devices does not): at most devices - 1
    faces left out, said on one line. As it is on one device."""
    n = len(_first(data))
    extra = (n % batch_size) % devices
    if devices <= 1 or not extra:
        return data
    print(
        f"{name}: the last {extra} of {n} faces left out, so every batch splits over "
        f"{devices} devices"
    )

    def cut(value):
        if isinstance(value, dict):
            return {key: cut(v) for key, v in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(cut(v) for v in value)
        return value[: n - extra]

    return cut(data)


def _first(value):
    while isinstance(value, (dict, tuple, list)):
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
    return value


def scaled(fit: P.Fit, d: P.Distribute) -> P.Fit:
    """A fit's settings for `d`: as they are, or with `scale_batch` a batch of batch_size per
    device and the learning rate scaled with it (the linear rule, Goyal et al. 2017), after
    at least one warm-up epoch, since the scaled rate is too high for random weights."""
    if not d.scale_batch or d.devices == 1:
        return fit
    return dataclasses.replace(
        fit,
        batch_size=fit.batch_size * d.devices,
        learning_rate=fit.learning_rate * d.devices,
        warmup_epochs=max(fit.warmup_epochs, 1) if fit.schedule == "cosine" else 0,
    )
