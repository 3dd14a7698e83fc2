"""The prepared data on disk, as the stages after prepare read it (store.py writes it).

data/prepared/<split>/{images,age,gender,race,name}.npy. Plain .npy files memory-map with
`np.load(mmap_mode="r")`, so a split never has to sit in RAM, and `np.save` writes the
same bytes for the same arrays, so reruns are byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from agegender.errors import UserError
from agegender.layout import PREPARED


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
        raise UserError(
            f"{path}: not found; run `dvc repro prepare` (or `dvc pull` from a DVC remote) first"
        )
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
