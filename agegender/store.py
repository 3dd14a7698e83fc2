"""Writing the prepared data (stage prepare): one folder per split, one .npy file per array.

data/prepared/<split>/{images,age,gender,race,name}.npy (data.py reads them back). `np.save`
writes the same bytes for the same arrays, so reruns are byte-identical; images are written
row by row, so no split is ever held in memory.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from agegender.errors import UserError, write_failure
from agegender.files import StagedFolder, publish, write_text
from agegender.layout import FACES_CSV, PREPARED, SPLITS, SUMMARY

OUTPUTS = (*SPLITS, FACES_CSV.name, SUMMARY.name)  # what one prepare run replaces, together


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
    PREPARED.mkdir(parents=True, exist_ok=True)
    kept = int(faces.split.isin(SPLITS).sum())
    need_bytes = kept * side * side * 3
    free = shutil.disk_usage(PREPARED.parent).free
    if need_bytes > free:
        raise UserError(
            f"{PREPARED}: {kept} faces of {side} px need {need_bytes / 2**30:.1f} GiB on disk, "
            f"{free / 2**30:.1f} GiB are free; free space or lower data.image_size"
        )
    staging = StagedFolder(PREPARED).tmp  # beside data/prepared; gone at exit if unused
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
        publish({staging / name: PREPARED / name for name in OUTPUTS})
    except OSError as error:  # the old outputs are untouched; say why in one line
        failure = write_failure(error, PREPARED)
        if failure is None:
            raise
        raise failure from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
