"""The models' sections of params.yaml (model_a, model_b, and the fit settings they share).

Part of the typed view in params.py, which re-exports every name here; split off so that
each file stays short. Same rules: no defaults, a bad value stops with one line naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agegender.typed_yaml import need


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
        # model A trains in one fit; a phase of model B may be skipped (0 epochs)
        least, why = (1, ": model A trains in one fit") if at == "model_a.fit" else (0, "")
        need(self.epochs >= least, f"{at}.epochs", f"must be >= {least}{why}, got {self.epochs}")
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
        need(
            self.phase1.epochs + self.phase2.epochs >= 1,
            f"{at}.phase1.epochs",
            "and phase2.epochs are both 0; give one of them an epoch or more",
        )
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
