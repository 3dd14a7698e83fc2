"""How fit reads the faces (train.loader): the arrays as they are, or seeded batches read
from the memory-mapped files; and the image sizes of progressive resizing."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from agegender.params import Loader


def size_schedule(epochs: int, sizes: Sequence[int], full: int) -> list[tuple[int, int]]:
    """[(image size, epochs)]: `epochs` split evenly over `sizes` and then `full`, which
    takes the remainder. No sizes: [(full, epochs)], one fit as without progressive resizing."""
    stages = [*sizes, full]
    each = epochs // len(stages)
    return [(size, each) for size in sizes] + [(full, epochs - each * len(sizes))]


def resized(images: np.ndarray, size: int, batch: int = 500) -> np.ndarray:
    """uint8 faces at size x size, smoothed first (antialias) as a smaller photo would be."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[3]), np.uint8)
    for i in range(0, len(images), batch):
        x = ops.image.resize(
            np.asarray(images[i : i + batch], "float32"), (size, size), antialias=True
        )
        out[i : i + batch] = np.clip(np.round(ops.convert_to_numpy(x)), 0, 255)
    return out


class Batches(keras.utils.PyDataset):
    """Batches of (memory-mapped) arrays, in a seeded order each epoch, or in order without
    a seed (validation, prediction).

    Only a batch at a time is read into memory, so a split may be larger than RAM, and a
    batch depends on the seed, the epoch and its index alone: any number of workers gives
    the same batches. `size` resizes each batch (progressive resizing).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: dict[str, np.ndarray] | None,
        batch_size: int,
        seed: int | None = None,
        epoch: int = 0,
        size: int | None = None,
        workers: int = 1,
    ):
        super().__init__(workers=workers)
        self.x, self.y, self.batch_size, self.size = x, y, batch_size, size
        self.seed, self.epoch = seed, epoch
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if self.seed is None:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        # sorted rows: a memory-mapped file is read forwards; the batch is the same set
        rows = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        x = np.asarray(self.x[rows])
        x = resized(x, self.size) if self.size else x
        if self.y is None:
            return x
        return x, {name: np.asarray(v[rows]) for name, v in self.y.items()}

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()


def inputs(
    x: np.ndarray,
    y: dict[str, np.ndarray] | None,
    batch_size: int,
    loader: Loader,
    seed: int | None = None,
    epoch: int = 0,
    size: int | None = None,
) -> dict:
    """The keyword arguments x (and y, batch_size) of fit, evaluate or predict under
    train.loader: the arrays as they are (resized first, for progressive resizing), or
    Batches reading them; `seed` shuffles the batches (training only)."""
    if loader.kind == "stream":
        return {"x": Batches(x, y, batch_size, seed, epoch, size, loader.workers)}
    x = resized(x, size) if size else x
    return {"x": x, "batch_size": batch_size} | ({} if y is None else {"y": y})
