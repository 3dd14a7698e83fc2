"""User-facing errors: one clear line, no traceback (files.py: nothing half-written)."""

from __future__ import annotations

import errno
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """Bad input the user can fix; the message names the file or param and what to do."""


# Write failures the machine causes, not the code: said in one line, never a traceback.
WRITE_FAILURES = {
    errno.ENOSPC: "no space left on the device; free some and rerun",
    errno.EDQUOT: "disk quota exceeded; free some and rerun",
    errno.EROFS: "the file system is read-only; make it writable or run elsewhere",
    errno.EACCES: "permission denied; make it writable",
    errno.EPERM: "permission denied; make it writable",
    errno.EFBIG: "file too large for this system's limit (ulimit -f); raise the limit",
}


SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile: no errno


def write_failure(error: OSError, path: Path | str | None = None) -> UserError | None:
    """The one-line UserError for a failed write, or None if `error` is not one."""
    if error.errno in WRITE_FAILURES:
        cause = WRITE_FAILURES[error.errno]
    elif error.errno is None and SHORT_WRITE.search(str(error)):
        cause = "the write stopped short: the disk is full or a file-size limit (ulimit -f) hit"
    else:
        return None
    where = path or error.filename or "an output file"
    return UserError(f"cannot write {where}: {cause}")


_interrupted: list[int] = []


def _on_sigint(signum, frame) -> None:
    _interrupted.append(signum)
    raise KeyboardInterrupt


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(); a UserError becomes one line on stderr and exit status 2.

    Ctrl-C gives `interrupted` and status 130, also when the KeyboardInterrupt surfaces
    wrapped in another exception by a native library (TensorFlow's pybind11 callbacks).
    """
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        failure = write_failure(error)
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        sys.exit(2)
    except BaseException:
        if not _interrupted:
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)
