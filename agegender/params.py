"""Typed, validated view of params.yaml.

params.yaml is the single source of defaults: these dataclasses have none, so a
missing key is an error rather than a silent fallback. Every stage reads its
params through `load()`; a bad key or value stops with one line naming it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agegender.model_params import Augment, Fit, Loss, ModelA, ModelB, Phase1, Phase2
from agegender.typed_yaml import ParamsError, build, need, read_yaml

__all__ = ["Augment", "Fit", "Loss", "ModelA", "ModelB", "Phase1", "Phase2", "Params", "load"]

PARAMS_FILE = Path("params.yaml")
SEED_MAX = 2**32 - 1  # NumPy's and TensorFlow's seeds are 32-bit
MISSING = object()  # getattr's answer for a key params.yaml does not have (None is a value)


@dataclass(frozen=True)
class Data:
    raw: str  # archive (.tar.gz/.tar/.zip) or folder of UTKFace images
    image_size: int  # square side, pixels, of the prepared images and model input
    subset_size: int  # faces drawn for train + val
    val_size: int
    test_size: int  # cap on the held-out test split (0 disables it)
    train_all: bool  # every usable face outside val and test trains, not only the subset's

    def check(self, at: str) -> None:
        need(self.raw.strip() != "", f"{at}.raw", "is empty; set it to data/raw/UTKFace.tar.gz")
        need(self.image_size >= 32, f"{at}.image_size", f"must be >= 32, got {self.image_size}")
        need(self.image_size <= 512, f"{at}.image_size", f"must be <= 512, got {self.image_size}")
        need(self.subset_size >= 2, f"{at}.subset_size", f"must be >= 2, got {self.subset_size}")
        need(self.val_size >= 1, f"{at}.val_size", f"must be >= 1, got {self.val_size}")
        need(
            self.val_size < self.subset_size,
            f"{at}.val_size",
            f"must be smaller than data.subset_size ({self.subset_size}), got {self.val_size}",
        )
        need(self.test_size >= 0, f"{at}.test_size", f"must be >= 0, got {self.test_size}")


@dataclass(frozen=True)
class Distribute:
    backend: Literal["tensorflow", "jax"]  # Keras's backend in the training stages
    devices: int  # > 1: keras.distribution.DataParallel over this many devices (jax)
    scale_batch: bool  # true: batch_size per device, learning rate x devices, warm-up

    def check(self, at: str) -> None:
        need(self.devices >= 1, f"{at}.devices", f"must be >= 1, got {self.devices}")
        need(
            self.devices == 1 or self.backend == "jax",
            f"{at}.devices",
            f"{self.devices} devices need backend jax (Keras 3 distributes on JAX); set "
            f"{at}.backend to jax or devices to 1",
        )


@dataclass(frozen=True)
class Loader:
    # arrays: each split copied into memory once (fastest while it fits); stream: seeded
    # batches read from the memory-mapped .npy files (training.Batches), for any size
    kind: Literal["arrays", "stream"]
    workers: int  # stream: threads reading batches; the batches do not depend on it

    def check(self, at: str) -> None:
        need(self.workers >= 1, f"{at}.workers", f"must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class Train:
    mixed_precision: bool  # mixed_float16 compute on a GPU; outputs stay float32
    deterministic: bool  # deterministic TensorFlow ops: same params, same model
    # threads of every stage's TensorFlow (runtime.py): results depend on the thread count,
    # not on the machine's cores, so it is fixed; more is faster on a bigger machine, other bytes
    threads: int
    distribute: Distribute  # devices and backend of the training stages (distribute.py)
    loader: Loader  # how fit reads the faces

    def check(self, at: str) -> None:
        need(1 <= self.threads <= 256, f"{at}.threads", f"must be in [1, 256], got {self.threads}")


@dataclass(frozen=True)
class Evaluate:
    flip_tta: bool  # average each prediction with that of the mirrored face
    batch_size: int
    range_level: float  # the age range's coverage (calibration.py), fitted on val
    bootstrap: int  # resamples for the 95 % intervals on test scores (intervals.py)

    def check(self, at: str) -> None:
        need(self.batch_size >= 1, f"{at}.batch_size", "must be >= 1")
        level = self.range_level
        need(0.5 <= level <= 0.99, f"{at}.range_level", f"must be in [0.5, 0.99], got {level}")
        need(self.bootstrap >= 100, f"{at}.bootstrap", f"must be >= 100, got {self.bootstrap}")


@dataclass(frozen=True)
class Report:
    worst_faces: int  # thumbnails of the worst age predictions (DVC-cached, never in git)

    def check(self, at: str) -> None:
        need(self.worst_faces >= 0, f"{at}.worst_faces", "must be >= 0")


@dataclass(frozen=True)
class Range:
    """A search range: uniform between low and high, or log-uniform (learning rates)."""

    low: float
    high: float
    log: bool

    def check(self, at: str) -> None:
        need(self.low < self.high, at, f"low must be below high, got {self.low} and {self.high}")
        need(not self.log or self.low > 0, f"{at}.low", f"log needs low > 0, got {self.low}")


@dataclass(frozen=True)
class Choice:
    """A search among values: numbers, strings or lists (a conv's filters), each a value the
    key may take, checked when a trial loads its params."""

    choices: list[Any]

    def check(self, at: str) -> None:
        need(len(self.choices) >= 1, f"{at}.choices", "must hold one value or more")


@dataclass(frozen=True)
class Search:
    epochs: int  # each trial's training epochs (model A: a shortened schedule; B: phase 1's)
    space: dict[str, Range | Choice]  # dotted params key -> its range or choices

    def check(self, at: str) -> None:
        need(self.epochs >= 1, f"{at}.epochs", f"must be >= 1, got {self.epochs}")
        need(len(self.space) >= 1, f"{at}.space", "must name one key or more")


@dataclass(frozen=True)
class Tune:
    """scripts/tune.py's studies: a seeded sampler, a score, and a search per model."""

    seed: int  # Optuna's TPE sampler (trial n samples with seed + n)
    gender_point: float  # years of val age MAE that one point of val gender accuracy is worth
    model_a: Search
    model_b: Search

    def check(self, at: str) -> None:
        need(self.gender_point >= 0, f"{at}.gender_point", "must be >= 0")


@dataclass(frozen=True)
class Params:
    seed: int
    data: Data
    train: Train
    model_a: ModelA
    model_b: ModelB
    evaluate: Evaluate
    report: Report
    tune: Tune

    def check(self, at: str) -> None:
        """Cross-section rules: model A's pooling must not shrink the image (or a progressive
        size) below one pixel; each global batch must split evenly over the training devices."""
        d = self.train.distribute
        if not d.scale_batch:
            fits = {
                "model_a.fit": self.model_a.fit,
                "model_b.phase1": self.model_b.phase1,
                "model_b.phase2": self.model_b.phase2,
            }
            for key, fit in fits.items():
                need(
                    fit.batch_size % d.devices == 0,
                    f"{key}.batch_size",
                    f"must divide by train.distribute.devices ({d.devices}), got "
                    f"{fit.batch_size}; or set train.distribute.scale_batch",
                )
        for model in ("model_a", "model_b"):
            for key in getattr(self.tune, model).space:
                value = lookup(self, key) if not key.startswith("tune.") else MISSING
                need(
                    value is not MISSING and not dataclasses.is_dataclass(value),
                    f"tune.{model}.space.{key}",
                    "not a value of params.yaml (a dotted key such as model_a.dropout)",
                )
        a = self.model_a
        blocks = len(a.trunk_filters) + len(a.branch_filters)
        shrink = a.stem_stride * 2**blocks
        need(
            self.data.image_size >= shrink,
            "data.image_size",
            f"must be >= {shrink} for model_a (stem_stride {a.stem_stride} and {blocks} pooling "
            f"blocks), got {self.data.image_size}; raise it or drop a block",
        )
        sizes = [*a.progressive, self.data.image_size]
        if a.progressive:
            need(
                all(small < big for small, big in zip(sizes, sizes[1:], strict=False)),
                "model_a.progressive",
                f"must increase and stay below data.image_size ({self.data.image_size}), "
                f"got {a.progressive}",
            )
            need(
                a.progressive[0] >= shrink,
                "model_a.progressive",
                f"sizes must be >= {shrink} for model_a's pooling, got {a.progressive}",
            )
            need(
                a.pooling == "avg",
                "model_a.progressive",
                "needs model_a.pooling: avg (flatten fixes the input size); set it to []",
            )
            need(
                a.fit.epochs >= len(sizes),
                "model_a.progressive",
                f"{len(sizes)} sizes need model_a.fit.epochs >= {len(sizes)}, got {a.fit.epochs}",
            )


def lookup(params: Params, key: str) -> object:
    """The value of a dotted key (`model_a.fit.learning_rate`), or MISSING."""
    value: object = params
    for part in key.split("."):
        value = getattr(value, part, MISSING)
    return value


def load(path: Path | str = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run from the project root, where params.yaml is")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        got = "it is empty" if raw is None else f"got {raw!r:.80}"
        raise ParamsError(f"{path}: must be a mapping of sections (seed, data, ...); {got}")
    try:
        params: Params = build(Params, raw)  # type: ignore[assignment]
        seed = params.seed
        need(0 <= seed <= SEED_MAX, "seed", f"must be in [0, {SEED_MAX}], got {seed}")
    except ParamsError as error:
        raise ParamsError(f"{path}: {error}") from None
    return params
