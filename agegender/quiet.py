"""Silence what native libraries (TensorFlow, TFLite) print: all of it while they load
(quiet_native_logs), or only their known noise for a whole stage (filter_native_noise)."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Send what C++ libraries write to file descriptor 2 to /dev/null meanwhile; Python's
    own errors still reach the user, as they are raised and printed afterwards."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# TensorFlow's start-up notices (oneDNN, CUDA on a CPU machine, CPU features) and the tf.data
# notice of TensorFlow 2.21 about `use_unbounded_threadpool`: printed by C++ on every run,
# not affected by TF_CPP_MIN_LOG_LEVEL, and no help to anyone reading a stage's log.
NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IWE]0000 \S+ +\d+ (port|cudart_stub|cuda_platform|cuda_executor|node_def_util"
    rb"|cpu_feature_guard)\.cc:"
    rb"|To enable the following instructions: )"
)


def filter_native_noise() -> None:
    """From here on, pass what is written to file descriptor 2 through a thread that drops
    the NOISE lines and forwards every other one (Python's tracebacks and one-line errors,
    and any other native message). At exit the pipe is drained before the process ends."""
    if os.environ.get("AGEGENDER_RAW_STDERR"):  # to see everything, for debugging
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    original = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as source:
            for line in iter(source.readline, b""):
                if not NOISE.match(line):
                    os.write(original, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def drain() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end closes: the pump reads to its end
        thread.join(timeout=10)

    atexit.register(drain)
