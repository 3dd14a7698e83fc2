"""The prepared data on disk: one folder per split, one .npy file per array.

data/prepared/<split>/{images,age,gender,race,name}.npy. Plain .npy files memory-map with
`np.load(mmap_mode="r")`, so a split never has to sit in RAM, and `np.save` writes the
same bytes for the same arrays, so reruns are byte-identical.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from agegender.errors import (
    UserError,
    clean_stale_temps,
    temp_prefix,
    write_failure,
    write_text,
)
from agegender.layout import FACES_CSV, PREPARED, SPLITS, SUMMARY

OUTPUTS = (*SPLITS, FACES_CSV.name, SUMMARY.name)  # what one prepare run replaces, together


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, S, S, 3), memory-mapped from disk
    age: np.ndarray  # int (N,)
    gender: np.ndarray  # 0 male, 1 female (N,)
    race: np.ndarray  # 0-4, -1 unknown (N,)
    name: np.ndarray  # file names (N,)

    def __len__(self) -> int:
        return len(self.age)

    def targets(self) -> dict[str, np.ndarray]:
        """Keras targets, keyed like the models' outputs."""
        return {
            "age": self.age.astype("float32")[:, None],
            "gender": self.gender.astype("float32")[:, None],
        }


ARRAYS = tuple(f.name for f in fields(Split))  # one .npy each per split


def load_split(name: str, folder: Path = PREPARED) -> Split:
    path = Path(folder) / name
    if not path.is_dir():
        raise UserError(f"{path}: not found; run `dvc repro prepare` (or `dvc pull`) first")
    arrays = {}
    for key in ARRAYS:
        try:
            arrays[key] = np.load(path / f"{key}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            raise UserError(
                f"{path / key}.npy: unreadable ({reason}); rerun `dvc repro prepare`"
            ) from None
    labels = {k: np.array(arrays[k]) for k in ARRAYS if k != "images"}  # small: into RAM
    if any(len(v) != len(arrays["images"]) for v in labels.values()):
        raise UserError(f"{path}: its arrays differ in length; rerun `dvc repro prepare`")
    return Split(arrays["images"], **labels)


def check_side(split: Split, side: int, name: str, wanted_by: str) -> None:
    """Prepared images of one size and a model or params of another: say so, not a Keras
    shape error (a stage run directly after a change of data.image_size)."""
    if len(split) and split.images.shape[1] != side:
        raise UserError(
            f"{PREPARED / name} holds {split.images.shape[1]} px images but {wanted_by} is "
            f"{side} px; run `dvc repro`, which prepares them again"
        )


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


def publish(staging: Path, out: Path, names: tuple[str, ...]) -> None:
    """Move one run's outputs (files or folders) from `staging` into `out` together: the old
    set goes first and Ctrl-C waits until the new one is in, so `out` never mixes two runs."""
    with signals_deferred():
        for name in names:
            old = out / name
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink(missing_ok=True)
        for name in names:
            os.replace(staging / name, out / name)


class NpyRows:
    """A uint8 .npy file of a known shape, written row by row at each row's place: the bytes
    np.save would write, with only one row in memory at a time. (A memory map would do the
    same, but its dirty pages count as the process's memory until the kernel writes them.)"""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.file = open(path, "w+b")  # noqa: SIM115 (closed in close())
        header = {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.file, header)
        self.start = self.file.tell()
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64))
        self.file.truncate(self.start + shape[0] * self.row_bytes)

    def __setitem__(self, row: int, pixels: np.ndarray) -> None:
        self.file.seek(self.start + row * self.row_bytes)
        self.file.write(np.ascontiguousarray(pixels, np.uint8).tobytes())

    def close(self) -> None:
        self.file.close()


def write_prepared(
    faces: pd.DataFrame,
    summary: dict,
    side: int,
    fill: Callable[[dict[tuple[str, str], tuple[NpyRows, int]]], None],
) -> None:
    """Write everything into a staging folder beside data/prepared, then publish it; the staging
    folder of a killed run is removed by the next.

    Each split's images.npy is written row by row as `fill` decodes the kept faces, given
    {(name, sha256): (file, row)}: no split is ever held in memory.
    """
    clean_stale_temps(PREPARED)
    PREPARED.mkdir(parents=True, exist_ok=True)
    kept = int(faces.split.isin(SPLITS).sum())
    need_bytes = kept * side * side * 3
    free = shutil.disk_usage(PREPARED.parent).free
    if need_bytes > free:
        raise UserError(
            f"{PREPARED}: {kept} faces of {side} px need {need_bytes / 2**30:.1f} GiB on disk, "
            f"{free / 2**30:.1f} GiB are free; free space or lower data.image_size"
        )
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix(PREPARED), dir=PREPARED.parent))
    try:
        places: dict[tuple[str, str], tuple[NpyRows, int]] = {}
        images: list[NpyRows] = []
        for name in SPLITS:
            rows = faces[faces.split == name]
            folder = staging / name
            folder.mkdir()
            array = NpyRows(folder / "images.npy", (len(rows), side, side, 3))
            images.append(array)
            for row, key in enumerate(zip(rows.name, rows.sha256, strict=True)):
                places[key] = (array, row)
            labels = {
                "age": rows.age.to_numpy().astype(np.int16),
                "gender": rows.gender.to_numpy().astype(np.int8),
                "race": rows.race.to_numpy().astype(np.int8),
                "name": np.array(rows.name.to_numpy(), dtype=str),
            }
            for key, values in labels.items():
                np.save(folder / f"{key}.npy", np.ascontiguousarray(values), allow_pickle=False)
        try:
            fill(places)
        finally:
            for array in images:
                array.close()
        columns = ["name", "sha256", "age", "gender", "race", "status", "reason", "split"]
        csv = faces[columns].to_csv(index=False, lineterminator="\n")
        write_text(staging / FACES_CSV.name, csv)
        write_text(staging / SUMMARY.name, json.dumps(summary, indent=2) + "\n")
        publish(staging, PREPARED, OUTPUTS)
    except OSError as error:  # the old outputs are untouched; say why in one line
        failure = write_failure(error, PREPARED)
        if failure is None:
            raise
        raise failure from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
