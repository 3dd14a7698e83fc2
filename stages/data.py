"""Loading the prepared splits and shaping them for Keras."""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.errors import UserError

PREPARED = Path("data/prepared")


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


def _memmap_member(path: Path, key: str) -> np.ndarray:
    """Memory-map one array of an uncompressed .npz, so a big split never sits in RAM."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:  # a compressed file cannot be mapped
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)  # local file header: name and extra lengths
        name_len, extra_len = struct.unpack("<HH", handle.read(4))
        handle.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(handle)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }[version]
        shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


def load_split(name: str, folder: Path = PREPARED) -> Split:
    path = Path(folder) / f"{name}.npz"
    if not path.is_file():
        raise UserError(f"{path}: not found; run `dvc repro prepare` (or `dvc pull`) first")
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = {k: z[k] for k in ("age", "gender", "race", "name")}
        images = _memmap_member(path, "images")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise UserError(f"{path}: unreadable ({error}); rerun `dvc repro prepare`") from None
    return Split(images, **labels)
