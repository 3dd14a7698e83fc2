"""Data-parallel training on the JAX backend (agegender/training/distribute.py), on virtual
CPU devices.

Each case runs in a subprocess: the backend and XLA's device count are fixed when Keras and
JAX are imported, and this process runs on TensorFlow. Skipped without the jax extra
(`pip install -e ".[jax]"`, which .ci/run installs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from agegender import params as P
from tests.conftest import ROOT, SMALL, write_params

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="pip install -e .[jax]"),
]

# Tiny model A, two epochs on random faces: what one, two devices or two processes train.
TRAIN = """
import hashlib, json, os, sys
from agegender import runtime
from agegender.training import distribute
d = runtime.configure("params.yaml").distribute
import keras, numpy as np
from agegender import params as P
from agegender.data import Split
from agegender.models.model_a import build_model_a
from agegender.training.loop import setup
from agegender.training.objective import compile_model, targets
params = P.load("params.yaml")
record = setup(params.seed, params.train)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
age, gender = rng.integers(1, 80, 64), rng.integers(0, 2, 64)
split = Split(x, age, gender, np.zeros(64, int), np.array(["f"] * 64))
model = build_model_a(params.model_a, 32, params.seed)
fit = distribute.scaled(params.model_a.fit, d)
compile_model(model, fit, params.model_a.loss, 64 // fit.batch_size)
(x, y), batch = distribute.local_share((x, targets(model, split)), fit.batch_size)
history = model.fit(x, y, batch_size=batch, epochs=2, shuffle=True, verbose=0)
weights = b"".join(np.asarray(w).tobytes() for w in model.get_weights())
print(json.dumps({"loss": history.history["loss"], "record": record,
                  "weights": hashlib.sha256(weights).hexdigest()}))
"""


def run(code: str, folder, env: dict | None = None, timeout: int = 600) -> dict:
    """Run `code` in `folder` (where params.yaml is) in a fresh Python; its last line of
    stdout, as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "", **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def jax_params(folder, devices: int, *extra: str) -> None:
    write_params(
        folder,
        [
            *SMALL,
            "train.distribute.backend=jax",
            f"train.distribute.devices={devices}",
            "model_a.fit.batch_size=16",
            *extra,
        ],
    )


def test_one_and_two_devices_give_the_same_losses_and_a_rerun_the_same_bytes(tmp_path):
    """The global batch is split over the devices, not changed: BatchNorm's statistics and
    the augmentation are those of the whole batch, so the losses agree to float rounding;
    a rerun on two devices gives the same weights, byte for byte."""
    out = {}
    for devices in (1, 2):
        folder = tmp_path / str(devices)
        folder.mkdir()
        jax_params(folder, devices)
        out[devices] = run(TRAIN, folder)
        assert out[devices]["record"]["devices"] == devices
        assert out[devices]["record"]["backend"] == "jax"
    assert out[1]["loss"] == pytest.approx(out[2]["loss"], rel=1e-4)
    again = run(TRAIN, tmp_path / "2")
    assert again["weights"] == out[2]["weights"] and again["loss"] == out[2]["loss"]


def test_augmentation_differs_between_replicas(tmp_path):
    """With MirroredStrategy every replica drew the same random numbers (keras#20612); here
    one random draw covers the global batch, so the same face gets different augmentations
    on the two devices."""
    jax_params(tmp_path, 2)
    code = """
    from agegender import runtime
    from agegender.training import distribute
    d = runtime.configure("params.yaml").distribute
    import json, jax, keras, numpy as np
    from agegender import params as P
    from agegender.models.augment import augment
    params = P.load("params.yaml")
    record = distribute.start(d)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, augment(inputs, params.model_a.augment, 0))
    face = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    batch = jax.device_put(np.repeat(face, 8, axis=0), keras.distribution.distribution()
        .get_data_layout((8, 32, 32, 3)).backend_layout)
    out = jax.jit(lambda x: model(x, training=True))(batch)
    shards = sorted(out.addressable_shards, key=lambda s: s.index[0].start)
    halves = [np.asarray(s.data) for s in shards]
    print(json.dumps({"devices": len(shards),
                      "differ": float(np.abs(halves[0] - halves[1]).max())}))
    """
    out = run(code, tmp_path)
    assert out["devices"] == 2 and out["differ"] > 1.0


def test_scaled_batch_takes_batch_size_per_device(tmp_path):
    jax_params(tmp_path, 2, "train.distribute.scale_batch=true")
    params = P.load(tmp_path / "params.yaml")
    from agegender.training import distribute

    fit = distribute.scaled(params.model_a.fit, params.train.distribute)
    assert fit.batch_size == 32 and fit.learning_rate == pytest.approx(
        2 * params.model_a.fit.learning_rate
    )
    assert fit.warmup_epochs >= 1  # the training itself: as above, with these numbers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_end_with_equal_weights(tmp_path):
    """keras.distribution.initialize: two processes of one device each train one model."""
    jax_params(tmp_path, 2)
    text = (tmp_path / "params.yaml").read_text()
    address = f"localhost:{_free_port()}"
    procs = []
    for rank in range(2):
        folder = tmp_path / f"process{rank}"
        folder.mkdir()
        (folder / "params.yaml").write_text(text)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "KERAS_BACKEND": "",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"{address},{address}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
            "KERAS_DISTRIBUTION_PROCESS_ID": str(rank),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", TRAIN],
                cwd=folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert outs[0]["record"]["processes"] == 2
    assert outs[0]["weights"] == outs[1]["weights"]
