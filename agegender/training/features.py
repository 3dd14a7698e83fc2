"""Model B's phase 1 on cached backbone features: the frozen backbone runs once, not
every epoch."""

from __future__ import annotations

import os

import keras
import numpy as np

from agegender.data import Split
from agegender.errors import UserError
from agegender.files import StagedFolder
from agegender.layout import FEATURES
from agegender.params import Loader
from agegender.training.batches import inputs
from agegender.training.objective import targets

FEATURE_BLOCK = 2048  # faces per feature pass written at a time (train.loader stream)


def cached_features(
    extractor: keras.Model,
    head: keras.Model,
    train: Split,
    val: Split,
    batch_size: int,
    loader: Loader,
) -> tuple[tuple, tuple]:
    """((x, y), (val_x, val_y)) of backbone features: the faces and their mirror images.

    The frozen backbone gives the same features every epoch, so phase 1 computes them once
    (one forward pass, no backward) and then trains the heads in seconds. The features are
    about 4 kB a face: in memory with the arrays loader, in memory-mapped files with stream
    (written a block at a time into a scratch folder removed at exit), so that neither the
    images nor their features need fit in memory.
    """
    print(f"phase1: backbone features of {len(train)} faces, mirrored too", flush=True)
    folder = StagedFolder(FEATURES).tmp if loader.kind == "stream" else None

    def features(name: str, *parts: np.ndarray) -> np.ndarray:
        """The features of each part's faces, one part after the other."""
        if folder is None:
            return np.concatenate(
                [extractor.predict(**inputs(p, None, batch_size, loader), verbose=0) for p in parts]
            )
        shape = (sum(len(p) for p in parts), extractor.output_shape[-1])
        path = folder / f"{name}.npy"
        out = np.lib.format.open_memmap(path, "w+", np.float32, shape)
        with open(path, "r+b") as f:  # claim the blocks now: writing through a memory map
            try:  # past a full disk dies of SIGBUS, with no message
                os.posix_fallocate(f.fileno(), 0, path.stat().st_size)
            except OSError as error:
                size = path.stat().st_size / 2**20
                raise UserError(
                    f"{path}: {size:.0f} MB of features do not fit on the disk "
                    f"({error.strerror}); free space under {folder.parent} or set "
                    f"train.loader.kind: arrays"
                ) from None
        row = 0
        for part in parts:
            for start in range(0, len(part), FEATURE_BLOCK):
                block = inputs(part[start : start + FEATURE_BLOCK], None, batch_size, loader)
                values = extractor.predict(**block, verbose=0)
                out[row : row + len(values)] = values
                row += len(values)
        out.flush()
        return out

    # a mirrored memory map is a view, no copy
    x = features("train", train.images, train.images[:, :, ::-1])
    y = {name: np.concatenate([v, v]) for name, v in targets(head, train).items()}
    return (x, y), (features("val", val.images), targets(head, val))
