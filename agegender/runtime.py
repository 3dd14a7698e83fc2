"""How every stage runs Keras: its backend and thread count, fixed before Keras is imported.

Float results depend on three things beyond params and code: the library versions
(constraints.txt), the CPU model (oneDNN, Eigen and XNNPACK choose their kernels and blocking
from the CPU they find) and the number of threads that split each operation (each thread
sums its own share, so another count adds in another order). The first is pinned by the
install, the last here: `train.threads` threads on any machine, so a 2-core and a 64-core
machine of the same CPU model train the same bytes. README: Reproducibility.
"""

from __future__ import annotations

import os
import sys

from agegender import params as P
from agegender.errors import UserError
from agegender.quiet import filter_native_noise

VIRTUAL_PER_CORE = 8


def configure(path: str | os.PathLike = P.PARAMS_FILE) -> P.Train | None:
    """Set the backend (train.distribute.backend), its thread count (train.threads) and, on
    JAX with several devices, as many virtual CPU devices. Call before importing Keras.

    A missing or bad params.yaml does nothing here: the stage's main() loads it again and
    says what is wrong in one line.
    """
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main is not None and main.name.startswith("stages."):  # a stage, not a test importing it
        filter_native_noise()  # TensorFlow's start-up and tf.data notices off the log
    try:
        train = P.load(path).train
    except UserError:
        return None
    d = train.distribute
    os.environ["KERAS_BACKEND"] = d.backend
    threads = str(train.threads)
    # TensorFlow's intra-op pool (oneDNN and Eigen split each op over it) and inter-op pool
    os.environ["TF_NUM_INTRAOP_THREADS"] = threads
    os.environ["TF_NUM_INTEROP_THREADS"] = threads
    # Virtual CPU devices cost memory each (1,000 took 8 GB): past VIRTUAL_PER_CORE per core
    # none are made, and distribute.start() says in one line that the machine lacks them.
    virtual_ok = d.devices <= VIRTUAL_PER_CORE * (os.cpu_count() or 1)
    if d.backend == "jax" and d.devices > 1 and virtual_ok:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            flag = f"--xla_force_host_platform_device_count={d.devices}"
            os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    return train
