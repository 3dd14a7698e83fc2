"""What decides a run's float results besides params and code, and what only times it.

`describe()` goes into evaluate's environment.json, a DVC output: the CPU model (oneDNN,
Eigen and XNNPACK pick kernels by CPU), the backend, the thread count (runtime.py) and the
library versions. The core count and the wall times decide nothing, since the thread count
is fixed; they differ from machine to machine, so they go to reports/times/ (not tracked),
which `record_times` writes and the benchmarks read.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata

from agegender.files import write_text
from agegender.layout import TIMES

PACKAGES = ("tensorflow", "keras", "jax", "numpy", "pillow", "pandas", "scikit-learn", "dvc")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The vector extensions that decide which kernels run: AVX2, AVX-512."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((ln for ln in info if ln.startswith("flags")), "").split()
    except OSError:
        return []
    return sorted(f for f in set(flags) if f in ("avx2", "avx512f", "avx512_bf16", "amx_tile"))


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def describe() -> dict:
    """The facts a run's bytes depend on (besides params, code and data)."""
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "python": platform.python_version(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "threads": int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0) or None,
        "packages": versions(),
    }


def record_times(stage: str, times: dict) -> None:
    """reports/times/<stage>.json: this machine's wall times of a stage, with its CPU and cores.

    Not a DVC output and not in git: times differ on every run, and an output that holds them
    would change dvc.lock on every rerun.
    """
    record = {"cpu": cpu_model(), "cores": os.cpu_count(), **times}
    write_text(TIMES / f"{stage}.json", json.dumps(record, indent=2) + "\n")
