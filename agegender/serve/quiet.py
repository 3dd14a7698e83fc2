"""Silence what native libraries (TensorFlow, TFLite) print while they load."""

from __future__ import annotations

import contextlib
import os
import sys
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
