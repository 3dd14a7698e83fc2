"""The machine and library versions a run used: float results depend on both.

oneDNN and Eigen pick their kernels by CPU (AVX2 or AVX-512), so the same params give
byte-identical results only on the same CPU model with the same library versions.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

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


def describe() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "packages": versions,
    }
