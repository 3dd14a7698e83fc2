"""Typed, validated view of params.yaml.

params.yaml is the single source of defaults: these dataclasses have none, so a
missing key is an error rather than a silent fallback. Every stage reads its
params through `load()`; a bad key or value stops with one line naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agegender.typed_yaml import ParamsError, build, need, read_yaml

PARAMS_FILE = Path("params.yaml")
SEED_MAX = 2**32 - 1  # NumPy's and TensorFlow's seeds are 32-bit


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
class Augment:
    """Random training-time augmentation; 0 (or false) disables each one."""

    flip: bool
    rotation: float  # fraction of a full turn
    translation: float  # fraction of the image side
    zoom: float
    brightness: float
    contrast: float

    def check(self, at: str) -> None:
        for name in ("rotation", "translation", "zoom", "brightness", "contrast"):
            value = getattr(self, name)
            need(0 <= value < 1, f"{at}.{name}", f"must be in [0, 1), got {value}")


@dataclass(frozen=True)
class Loss:
    # dldl: KL divergence to a Gaussian around the true age plus L1 on the expectation
    # (DLDL-v2); needs age_head: expectation
    age: Literal["mae", "mse", "huber", "dldl"]
    age_sigma: float  # dldl: standard deviation of the target age distribution, years
    age_weight: float
    gender_weight: float
    label_smoothing: float

    def check(self, at: str) -> None:
        need(self.age_weight >= 0, f"{at}.age_weight", f"must be >= 0, got {self.age_weight}")
        need(
            self.gender_weight >= 0,
            f"{at}.gender_weight",
            f"must be >= 0, got {self.gender_weight}",
        )
        need(
            self.age_weight + self.gender_weight > 0,
            f"{at}.age_weight",
            "age_weight and gender_weight cannot both be 0",
        )
        need(
            0.5 <= self.age_sigma <= 20,
            f"{at}.age_sigma",
            f"must be in [0.5, 20] years, got {self.age_sigma}",
        )
        need(
            0 <= self.label_smoothing < 0.5,
            f"{at}.label_smoothing",
            f"must be in [0, 0.5), got {self.label_smoothing}",
        )


@dataclass(frozen=True)
class Fit:
    """One call to model.fit: shared by model A and both phases of model B."""

    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"]
    learning_rate: float
    weight_decay: float
    batch_size: int
    epochs: int
    schedule: Literal["plateau", "cosine"]  # plateau: ReduceLROnPlateau; cosine: decay to 0
    warmup_epochs: int  # cosine only: the rate rises linearly from 0 over these epochs
    reduce_lr_factor: float
    reduce_lr_patience: int
    early_stopping_patience: int

    def check(self, at: str) -> None:
        need(
            0 < self.learning_rate < 1,
            f"{at}.learning_rate",
            f"must be in (0, 1), got {self.learning_rate}",
        )
        need(self.weight_decay >= 0, f"{at}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        need(self.batch_size >= 1, f"{at}.batch_size", f"must be >= 1, got {self.batch_size}")
        need(self.epochs >= 0, f"{at}.epochs", f"must be >= 0, got {self.epochs}")
        need(
            0 <= self.warmup_epochs <= max(self.epochs - 1, 0),
            f"{at}.warmup_epochs",
            f"must be in [0, epochs - 1], got {self.warmup_epochs}",
        )
        need(
            self.warmup_epochs == 0 or self.schedule == "cosine",
            f"{at}.warmup_epochs",
            "needs schedule: cosine (set it to 0 for plateau)",
        )
        need(
            0 < self.reduce_lr_factor < 1,
            f"{at}.reduce_lr_factor",
            f"must be in (0, 1), got {self.reduce_lr_factor}",
        )
        need(
            self.reduce_lr_patience >= 1,
            f"{at}.reduce_lr_patience",
            f"must be >= 1, got {self.reduce_lr_patience}",
        )
        need(
            self.early_stopping_patience >= 1,
            f"{at}.early_stopping_patience",
            f"must be >= 1, got {self.early_stopping_patience}",
        )


@dataclass(frozen=True)
class ModelA:
    trunk_filters: list[int]  # one conv block per entry, each halving the resolution
    branch_filters: list[int]  # conv blocks of each head's own branch (age and gender)
    convs_per_block: int
    kernel_size: int
    stem_stride: int  # 2: stride-2 stem conv; 4: plus a 2x2 pool (16x fewer trunk FLOPs)
    batch_norm: bool
    spatial_dropout: float
    pooling: Literal["flatten", "avg"]
    dense_units: int
    dropout: float
    l2: float
    age_head: Literal["linear", "expectation"]
    # model_b: learn from model B's predictions on the training faces too (distillation,
    # stage `teach`); A's weights still start from scratch
    teacher: Literal["none", "model_b"]
    teacher_weight: float  # how far the targets move from the labels to the teacher's
    # progressive resizing: train first at these smaller sizes (pixels, increasing), then at
    # data.image_size; fit.epochs split evenly over the sizes. [] trains at full size only
    progressive: list[int]
    loss: Loss
    augment: Augment
    fit: Fit

    def check(self, at: str) -> None:
        need(
            0 <= self.teacher_weight <= 1,
            f"{at}.teacher_weight",
            f"must be in [0, 1], got {self.teacher_weight}",
        )
        need(len(self.trunk_filters) >= 1, f"{at}.trunk_filters", "needs at least one block")
        for name in ("trunk_filters", "branch_filters"):
            values = getattr(self, name)
            need(all(v >= 1 for v in values), f"{at}.{name}", f"must be positive, got {values}")
        need(self.convs_per_block >= 1, f"{at}.convs_per_block", "must be >= 1")
        need(self.kernel_size in (1, 3, 5, 7), f"{at}.kernel_size", "must be 1, 3, 5 or 7")
        need(self.stem_stride in (1, 2, 4), f"{at}.stem_stride", "must be 1, 2 or 4")
        need(self.dense_units >= 1, f"{at}.dense_units", "must be >= 1")
        need(0 <= self.spatial_dropout < 1, f"{at}.spatial_dropout", "must be in [0, 1)")
        need(0 <= self.dropout < 1, f"{at}.dropout", "must be in [0, 1)")
        need(self.l2 >= 0, f"{at}.l2", "must be >= 0")
        _check_dldl(self.loss, self.age_head, at)


def _check_dldl(loss: Loss, age_head: str, at: str) -> None:
    need(
        loss.age != "dldl" or age_head == "expectation",
        f"{at}.loss.age",
        "dldl trains an age distribution: it needs age_head: expectation",
    )


@dataclass(frozen=True)
class Phase1(Fit):
    # Train the heads on backbone features computed once (faces and their mirror images):
    # each epoch then costs milliseconds instead of a forward pass of the backbone.
    cached_features: bool


@dataclass(frozen=True)
class Phase2(Fit):
    unfreeze: int | Literal["all"]  # top backbone layers made trainable

    def check(self, at: str) -> None:
        super().check(at)
        if self.unfreeze != "all":
            need(
                self.unfreeze >= 0, f"{at}.unfreeze", f"must be >= 0 or 'all', got {self.unfreeze}"
            )


@dataclass(frozen=True)
class ModelB:
    backbone: str  # a key of backbones.BACKBONES (checked there: see backbones.check)
    alpha: float  # width multiplier, MobileNet v1/v2 only
    # "pretrained" (the backbone's own: ImageNet's, or VGGFace2's for mobilenet_vggface2;
    # "imagenet" and "vggface2" name them), a weights file (.h5; a graph-model .json for
    # mobilenet_vggface2), or null (random initialisation)
    weights: str | None
    input_size: int  # pixels: images are resized to this inside the model (bilinear)
    head_init: Literal["random", "pretrained"]  # pretrained: the backbone file's own heads
    # frozen: the pretrained statistics, inference mode; adapt: statistics re-estimated on the
    # training faces, then frozen; train: adapted, then updated in phase 2 (training mode)
    batch_norm: Literal["frozen", "adapt", "train"]
    bn_momentum: float  # train: moving-average momentum of the statistics in phase 2
    pooling: Literal["avg", "max", "avgmax"]
    norm: Literal["none", "batch", "layer"]
    dropout: float
    age_units: list[int]
    gender_units: list[int]
    age_head: Literal["linear", "expectation"]
    loss: Loss
    augment: Augment
    phase1: Phase1
    phase2: Phase2

    def check(self, at: str) -> None:
        """What needs no backbone registry; backbones.check does the rest (stage train_b),
        so that adding a backbone touches neither this file nor the stages before train_b."""
        need(self.alpha > 0, f"{at}.alpha", f"must be > 0, got {self.alpha}")
        need(
            0 <= self.bn_momentum < 1,
            f"{at}.bn_momentum",
            f"must be in [0, 1), got {self.bn_momentum}",
        )
        _check_dldl(self.loss, self.age_head, at)
        need(0 <= self.dropout < 1, f"{at}.dropout", "must be in [0, 1)")
        for name in ("age_units", "gender_units"):
            values = getattr(self, name)
            need(all(v >= 1 for v in values), f"{at}.{name}", f"must be positive, got {values}")
        need(32 <= self.input_size <= 512, f"{at}.input_size", "must be in [32, 512]")
        if self.head_init == "pretrained":
            need(
                self.age_units == self.gender_units == [256]
                and (self.pooling, self.norm, self.age_head) == ("avg", "none", "expectation"),
                f"{at}.head_init",
                "pretrained heads need age_units and gender_units [256], pooling avg, "
                "norm none and age_head expectation (the file's own heads)",
            )


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

    def check(self, at: str) -> None:
        need(self.batch_size >= 1, f"{at}.batch_size", "must be >= 1")


@dataclass(frozen=True)
class Report:
    worst_faces: int  # thumbnails of the worst age predictions (DVC-cached, never in git)

    def check(self, at: str) -> None:
        need(self.worst_faces >= 0, f"{at}.worst_faces", "must be >= 0")


@dataclass(frozen=True)
class Params:
    seed: int
    data: Data
    train: Train
    model_a: ModelA
    model_b: ModelB
    evaluate: Evaluate
    report: Report

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
