"""User-facing errors: one clear line, no traceback, nothing half-written."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


class UserError(Exception):
    """Bad input the user can fix; the message names the file or param and what to do."""


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
    except BaseException:
        if not _interrupted:
            raise
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def clean_stale_temps(path: Path | str) -> None:
    """Remove the temporaries a killed run left beside `path` (see atomic_path).

    Only names tempfile makes from this path's name are touched: `.{stem}.` + 8 random
    characters + the suffix.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.[a-z0-9_]{{8}}{re.escape(path.suffix)}")
    if not path.parent.is_dir():
        return
    for stale in path.parent.iterdir():
        if not pattern.fullmatch(stale.name):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The suffix is kept (Keras checks that a model file ends in .keras). The file gets the
    usual umask mode, not tempfile's 0600, and temporaries of a killed run are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
