"""User-facing errors: one clear line, no traceback, nothing half-written."""

from __future__ import annotations

import contextlib
import errno
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


def check_writable(*folders: Path | str) -> None:
    """Fail now, not after an hour of training, where an output cannot be written."""
    for folder in map(Path, folders):
        if any(p.exists() and not p.is_dir() for p in (folder, *folder.parents)):
            raise UserError(f"cannot write {folder}: a file stands where a folder must be; move it")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder) as probe:
                probe.write(b"\0" * 4096)
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as error:
            failure = write_failure(error, folder)
            if failure is None:
                raise
            raise failure from None


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


def temp_prefix(path: Path) -> str:
    """`.{stem}.{pid}.`: the owner's pid in the name tells a live run's temporary from one a
    killed run left."""
    return f".{path.stem}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temps(path: Path | str) -> None:
    """Remove the temporaries a killed run left beside `path` (see atomic_path).

    Only names tempfile makes from this path's name (`.{stem}.{pid}.` + 8 random characters
    + the suffix) are touched, and only where that pid is gone: a run started a second
    later leaves the first one's files alone.
    """
    path = Path(path)
    pattern = re.compile(
        rf"\.{re.escape(path.stem)}\.(\d+)\.[a-z0-9_]{{8}}{re.escape(path.suffix)}"
    )
    if not path.parent.is_dir():
        return
    for stale in path.parent.iterdir():
        match = pattern.fullmatch(stale.name)
        if not match or _alive(int(match.group(1))):
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
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=path.suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as error:
        failure = write_failure(error, path)
        if failure is None:
            raise
        raise failure from None
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
