"""Writing the prepared data (stage prepare): one folder per split, one .npy file per array.

data/prepared/<split>/{images,age,gender,race,name}.npy (data.py reads them back). `np.save`
writes the same bytes for the same arrays, so reruns are byte-identical; images are written
row by row, so no split is ever held in memory.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from agegender.errors import UserError, write_failure
from agegender.files import StagedFolder, publish, write_text
from agegender.layout import FACES_CSV, PREPARED, SPLITS, SUMMARY
from agegender.prepare.table import FileTable, disk_error
from agegender.spreadsheet import safe_cell

OUTPUTS = (*SPLITS, FACES_CSV.name, SUMMARY.name)  # what one prepare run replaces, together
CSV_COLUMNS = ("name", "sha256", "age", "gender", "race", "status", "reason", "split")
BLOCK = 4096  # label rows written at a time


class NpyRows:
    """A .npy file of a known shape and dtype, written in blocks of rows at each block's place:
    the bytes np.save would write, with only one block in memory at a time. (A memory map
    would do the same, but its dirty pages count as the process's memory until the kernel
    writes them.)"""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype | str = np.uint8):
        self.dtype = np.dtype(dtype)
        self.file = open(path, "w+b")  # noqa: SIM115 (closed in close())
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self.file, {**header, "shape": shape})
        self.start = self.file.tell()
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.file.truncate(self.start + shape[0] * self.row_bytes)

    def __setitem__(self, row: int, rows: np.ndarray) -> None:
        """Write one row, or consecutive rows from `row` on."""
        self.file.seek(self.start + row * self.row_bytes)
        self.file.write(np.ascontiguousarray(rows, self.dtype).tobytes())

    def close(self) -> None:
        self.file.close()


@contextlib.contextmanager
def staging() -> Iterator[Path]:
    """A folder beside data/prepared for one run's outputs and its table of files, removed at
    the end (and by the next run if this one is killed). A write that fails for want of
    space or rights ends in one line; the old outputs stay as they were."""
    PREPARED.mkdir(parents=True, exist_ok=True)
    folder = StagedFolder(PREPARED).tmp
    try:
        yield folder
    except OSError as error:
        failure = write_failure(error, PREPARED)
        if failure is None:
            raise
        raise failure from None
    except sqlite3.OperationalError as error:
        raise disk_error(error, PREPARED) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _write_labels(table: FileTable, split: str, n: int, folder: Path) -> None:
    """age, gender, race and name .npy of one split of n faces, in its rows' order, a block
    at a time."""
    longest = table.value("SELECT max(length(name)) FROM faces WHERE split = ?", split) or 1
    dtypes = {"age": np.int16, "gender": np.int8, "race": np.int8, "name": f"<U{longest}"}
    arrays = {key: NpyRows(folder / f"{key}.npy", (n,), dtype) for key, dtype in dtypes.items()}
    rows = table.rows(
        "SELECT age, gender, race, name FROM faces WHERE split = ? ORDER BY row", split
    )
    try:
        for start in range(0, n, BLOCK):
            block = list(itertools.islice(rows, BLOCK))
            for key, column in zip(dtypes, zip(*block, strict=True), strict=True):
                arrays[key][start] = np.array(column, dtypes[key])
    finally:
        for array in arrays.values():
            array.close()


def _write_csv(table: FileTable, path: Path) -> None:
    """faces.csv, a row at a time (csv's minimal quoting, as pandas writes it)."""
    with open(path, "w", newline="") as file:
        out = csv.writer(file, lineterminator="\n")
        out.writerow(CSV_COLUMNS)
        rows = table.rows(f"SELECT {', '.join(CSV_COLUMNS)} FROM faces ORDER BY pos")
        out.writerows([safe_cell(cell) for cell in row] for row in rows)


def write_prepared(
    staging: Path,
    table: FileTable,
    summary: dict,
    side: int,
    fill: Callable[[Callable[[str, str], tuple[NpyRows, int] | None], int], None],
) -> None:
    """Write every output into `staging`, then publish them together.

    Each split's images.npy is written row by row as `fill` decodes the kept faces: it is
    given a function from (name, sha256) to (file, row), or None for a file not kept (or
    already written), and the number of faces kept. No split is ever held in memory.
    """
    kept = table.value("SELECT count(*) FROM faces WHERE row IS NOT NULL")
    need_bytes = kept * side * side * 3
    free = shutil.disk_usage(PREPARED.parent).free
    if need_bytes > free:
        raise UserError(
            f"{PREPARED}: {kept} faces of {side} px need {need_bytes / 2**30:.1f} GiB on disk, "
            f"{free / 2**30:.1f} GiB are free; free space or lower data.image_size"
        )
    images: dict[str, NpyRows] = {}
    for name in SPLITS:
        folder = staging / name
        folder.mkdir()
        n = table.value("SELECT count(*) FROM faces WHERE split = ?", name)
        images[name] = NpyRows(folder / "images.npy", (n, side, side, 3))
        _write_labels(table, name, n, folder)

    def place(name: str, sha256: str) -> tuple[NpyRows, int] | None:
        found = table.db.execute(
            "SELECT pos, split, row FROM faces "
            "WHERE name = ? AND sha256 = ? AND row IS NOT NULL AND NOT filled",
            (name, sha256),
        ).fetchone()
        if found is None:
            return None
        table.db.execute("UPDATE faces SET filled = 1 WHERE pos = ?", found[:1])
        return images[found[1]], found[2]

    try:
        fill(place, kept)
    finally:
        for array in images.values():
            array.close()
    _write_csv(table, staging / FACES_CSV.name)
    write_text(staging / SUMMARY.name, json.dumps(summary, indent=2) + "\n")
    publish({staging / name: PREPARED / name for name in OUTPUTS})
