"""Atomic files and folders: an output is whole and new, or whole and old, never half-written.

Every writer of the pipeline goes through here: a temporary beside the target, renamed onto
it only when complete. Temporaries carry their owner's pid, so a run removes what a killed
run left, never what a live one is writing.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from agegender.errors import UserError, write_failure


def md5(path: Path) -> str:
    """The file's md5, as dvc.lock records it, read a MiB at a time (models are large)."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
    tmp_path = Path(tmp)
    deferred = False
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        finally:
            os.close(fd)
        yield tmp_path
        if _together:  # put in place with the rest of the set, at the end of together()
            _together[-1][tmp_path] = path
            deferred = True
        else:
            os.replace(tmp_path, path)
    except OSError as error:
        failure = write_failure(error, path)
        if failure is None:
            raise
        raise failure from None
    finally:
        if not deferred:
            tmp_path.unlink(missing_ok=True)


_together: list[dict[Path, Path]] = []  # the open together() blocks' finished files


@contextlib.contextmanager
def together() -> Iterator[None]:
    """Every file written through atomic_path in the block goes into place at its end, all
    in one publish(): a stage that fails or is killed before then leaves every previous
    output, one interrupted during the moves finishes them first. For stages whose outputs
    are read as one set (evaluate's metrics, calibration and intervals; the report and its
    figures). Inside the block, written(path) is where a file written so far is."""
    moves: dict[Path, Path] = {}
    _together.append(moves)
    try:
        try:
            yield
        finally:
            _together.pop()
        publish(moves)
    finally:
        for tmp in moves:  # moved already, or of a block that failed
            tmp.unlink(missing_ok=True)


def written(path: Path | str) -> Path:
    """Where `path`'s new content is: its temporary inside together(), else the path."""
    path = Path(path)
    pending = [tmp for block in _together for tmp, target in block.items() if target == path]
    return pending[-1] if pending else path


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip header holds: a fixed stamp


def save_model(model, path: Path | str) -> None:
    """Write a Keras model to a .keras file whose bytes depend on the model alone.

    Keras stamps the time of saving into metadata.json (`date_saved`) and into the zip's
    member headers, and numbers shared objects in config.json by their memory address
    (`shared_object_id`), so two saves of the same weights differed and every rerun changed
    dvc.lock. The file is rewritten with no time and the shared objects numbered in order of
    appearance; `keras.saving.load_model` opens it as before.
    """
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as saved:
            members = [(info, saved.read(info)) for info in saved.infolist()]
        with zipfile.ZipFile(tmp, "w") as out:
            for info, data in members:
                if info.filename == "metadata.json":
                    meta = json.loads(data)
                    meta.pop("date_saved", None)
                    data = json.dumps(meta).encode()
                elif info.filename == "config.json":
                    data = json.dumps(_renumbered(json.loads(data), {})).encode()
                fixed = zipfile.ZipInfo(info.filename, date_time=ZIP_EPOCH)
                fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
                out.writestr(fixed, data)


def _renumbered(value, ids: dict):
    """`value` with each shared_object_id (a memory address) replaced by its order of first
    appearance: the same object keeps one number, so sharing survives loading."""
    if isinstance(value, list):
        return [_renumbered(v, ids) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, v in value.items():
        out[key] = ids.setdefault(v, len(ids)) if key == "shared_object_id" else _renumbered(v, ids)
    return out


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


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then act on them as usual.

    A Python handler, not a blocked signal mask: any thread may receive the signal, but Python
    handlers always run in the main thread.
    """
    held = (signal.SIGINT, signal.SIGTERM)
    got: list[int] = []
    before = [signal.signal(s, lambda signum, _: got.append(signum)) for s in held]
    try:
        yield
    finally:
        for s, handler in zip(held, before, strict=True):
            signal.signal(s, handler)
        for s in got:
            signal.raise_signal(s)


def publish(moves: dict[Path, Path]) -> None:
    """Move finished outputs (files or folders, source -> target) into place together: the
    old targets go first and Ctrl-C waits until the new ones are in, so no set of outputs
    ever mixes two runs."""
    with signals_deferred():
        for source, target in moves.items():  # a file replaces a file in one step: no gap
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif source.is_dir():
                target.unlink(missing_ok=True)
        for source, target in moves.items():
            os.replace(source, target)


class StagedFolder:
    """A folder written in a temporary beside `path`, put in place by commit().

    For outputs written over a long time (a training run's DVCLive folder, an export): the
    temporary goes at exit if commit() never came, so Ctrl-C leaves the old folder as it was.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        clean_stale_temps(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(self.path), dir=self.path.parent))
        atexit.register(shutil.rmtree, self.tmp, ignore_errors=True)

    def commit(self) -> None:
        publish({self.tmp: self.path})


@contextlib.contextmanager
def atomic_folder(path: Path | str) -> Iterator[Path]:
    """Yield a temporary folder that replaces `path` only if the block succeeds."""
    staged = StagedFolder(path)
    try:
        yield staged.tmp
        staged.commit()
    finally:
        shutil.rmtree(staged.tmp, ignore_errors=True)


MAX_DEPTH = 64  # folders nested deeper than this are refused, not walked


def walk_files(folder: Path | str) -> list[Path]:
    """Every non-folder entry under `folder`, sorted. Iterative (a folder 1,000 levels deep
    would overflow a recursive walk) with a depth limit; linked folders are not entered."""
    found, todo = [], [(Path(folder), 0)]
    while todo:
        current, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise UserError(
                f"{current}: folders nested over {MAX_DEPTH} levels deep; move the images "
                f"into a shallower folder"
            )
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    todo.append((Path(entry.path), depth + 1))
                else:
                    found.append(Path(entry.path))
    return sorted(found)
