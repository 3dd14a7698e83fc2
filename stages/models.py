"""Model A (CNN from scratch) and model B (pretrained backbone), both raw pixels in.

Each model takes uint8 RGB images of data.image_size and returns
{"age": (N, 1) years, "gender": (N, 1) probability of female}. Augmentation (active
only in training) and input scaling are layers, so the saved .keras file needs nothing
else at prediction time and training cannot drift from serving. Keras 3 only: the same
code runs on the TensorFlow, JAX and PyTorch backends.
"""

from __future__ import annotations

import os
import re

import keras
import numpy as np
from keras import layers, ops

from stages.backbones import BACKBONES
from stages.errors import UserError
from stages.params import Augment, ModelA, ModelB
from stages.utkface import MAX_AGE

AGE_PRIOR = 33.0  # about UTKFace's mean age: a linear age head starts there, not at 0


@keras.saving.register_keras_serializable(package="agegender")
class ImageNetPreprocess(layers.Layer):
    """Pixels in [0, 255] -> the input scaling a backbone's ImageNet weights expect."""

    CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe", "none"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x):
        if self.mode == "tf":  # MobileNets: [-1, 1]
            return x / 127.5 - 1.0
        if self.mode == "caffe":  # VGG16, ResNet50: BGR, ImageNet mean subtracted
            mean = ops.convert_to_tensor(self.CAFFE_MEAN_BGR, dtype=x.dtype)
            return ops.flip(x, axis=-1) - mean
        return x  # EfficientNet rescales inside its own graph

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def pixels_in(
    image_size: int, aug: Augment, seed: int
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The uint8 input and the float [0, 255] tensor after training-time augmentation."""
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="to_float")(inputs)
    if aug.flip:
        x = layers.RandomFlip("horizontal", seed=seed, name="augment_flip")(x)
    if aug.rotation:
        x = layers.RandomRotation(
            aug.rotation, fill_mode="reflect", seed=seed + 1, name="augment_rotation"
        )(x)
    if aug.translation:
        t = aug.translation
        x = layers.RandomTranslation(
            t, t, fill_mode="reflect", seed=seed + 2, name="augment_translation"
        )(x)
    if aug.zoom:
        x = layers.RandomZoom(aug.zoom, fill_mode="reflect", seed=seed + 3, name="augment_zoom")(x)
    if aug.brightness:
        x = layers.RandomBrightness(
            aug.brightness, value_range=(0, 255), seed=seed + 4, name="augment_brightness"
        )(x)
    if aug.contrast:
        x = layers.RandomContrast(
            aug.contrast, value_range=(0, 255), seed=seed + 5, name="augment_contrast"
        )(x)
    return inputs, x


def age_output(x: keras.KerasTensor, head: str) -> keras.KerasTensor:
    """Age in years, float32 even under mixed precision.

    "expectation" predicts a distribution over ages 0..MAX_AGE and returns its mean:
    smoother to learn from few faces than one linear unit.
    """
    if head == "linear":
        return layers.Dense(
            1, bias_initializer=keras.initializers.Constant(AGE_PRIOR), dtype="float32", name="age"
        )(x)
    probs = layers.Dense(MAX_AGE + 1, activation="softmax", dtype="float32", name="age_probs")(x)
    ages = np.arange(MAX_AGE + 1, dtype="float32").reshape(-1, 1)
    expectation = layers.Dense(
        1,
        use_bias=False,
        trainable=False,
        kernel_initializer=keras.initializers.Constant(ages),
        dtype="float32",
        name="age",
    )
    return expectation(probs)


def gender_output(x: keras.KerasTensor) -> keras.KerasTensor:
    return layers.Dense(1, activation="sigmoid", dtype="float32", name="gender")(x)


# --- model A ------------------------------------------------------------------------------

# Keras's default 0.99 averages over ~100 steps, longer than the weights stay put at a high
# learning rate with ~60 steps per epoch; the stale statistics made val age MAE swing 9-20.
BN_MOMENTUM = 0.9


def _conv_block(x, filters: int, p: ModelA, name: str):
    reg = keras.regularizers.L2(p.l2) if p.l2 else None
    for i in range(p.convs_per_block):
        x = layers.Conv2D(
            filters,
            p.kernel_size,
            padding="same",
            use_bias=not p.batch_norm,
            kernel_regularizer=reg,
            name=f"{name}_conv{i + 1}",
        )(x)
        if p.batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{i + 1}")(x)
        x = layers.ReLU(name=f"{name}_relu{i + 1}")(x)
    x = layers.MaxPooling2D(name=f"{name}_pool")(x)
    if p.spatial_dropout:
        x = layers.SpatialDropout2D(p.spatial_dropout, name=f"{name}_drop")(x)
    return x


def _branch(x, p: ModelA, task: str):
    for i, filters in enumerate(p.branch_filters):
        x = _conv_block(x, filters, p, f"{task}_block{i + 1}")
    pool = layers.GlobalAveragePooling2D if p.pooling == "avg" else layers.Flatten
    x = pool(name=f"{task}_pool")(x)
    reg = keras.regularizers.L2(p.l2) if p.l2 else None
    x = layers.Dense(p.dense_units, kernel_regularizer=reg, name=f"{task}_dense")(x)
    if p.batch_norm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{task}_dense_bn")(x)
    x = layers.ReLU(name=f"{task}_dense_relu")(x)
    return layers.Dropout(p.dropout, name=f"{task}_dropout")(x)


def build_model_a(p: ModelA, image_size: int, seed: int) -> keras.Model:
    """Shared conv trunk, then an age branch and a gender branch with their own blocks."""
    inputs, x = pixels_in(image_size, p.augment, seed)
    x = layers.Rescaling(1 / 255, name="rescale")(x)
    x = layers.Conv2D(
        p.trunk_filters[0],
        p.kernel_size,
        strides=min(p.stem_stride, 2),
        padding="same",
        use_bias=not p.batch_norm,
        name="stem_conv",
    )(x)
    if p.batch_norm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    if p.stem_stride == 4:  # the stride-2 conv sees every pixel; the pool halves again
        x = layers.MaxPooling2D(name="stem_pool")(x)
    for i, filters in enumerate(p.trunk_filters):
        x = _conv_block(x, filters, p, f"trunk_block{i + 1}")
    outputs = {
        "age": age_output(_branch(x, p, "age"), p.age_head),
        "gender": gender_output(_branch(x, p, "gender")),
    }
    return keras.Model(inputs, outputs, name="model_a")


# --- model B ------------------------------------------------------------------------------


def keras_cache_dir() -> str:
    return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")


def build_backbone(p: ModelB) -> keras.Model:
    """The backbone without its classifier, for any input size.

    input_shape=(None, None, 3) makes Keras load the 224 px ImageNet file, whose weights
    fit any input size; asking for (128, 128, 3) would make it look for a file that is
    rarely in the cache.
    """
    spec = BACKBONES[p.backbone]
    kwargs = {"include_top": False, "weights": p.weights, "input_shape": (None, None, 3)}
    if spec.has_alpha:
        kwargs["alpha"] = p.alpha
    application = getattr(keras.applications, spec.application)
    try:
        return application(**kwargs)
    except Exception as error:
        if p.weights != "imagenet" or "URL fetch failure" not in str(error):
            if isinstance(error, ValueError):  # e.g. an alpha Keras has no weights for
                raise UserError(f"params.yaml: model_b: {str(error).splitlines()[0]}") from None
            raise
        wanted = re.search(r"/([^/\s]+\.h5)", str(error))
        name = wanted.group(1) if wanted else "the weights file"
        raise UserError(
            f"model_b.weights: imagenet weights for {p.backbone} are not cached and cannot be "
            f"downloaded; put {name} in {keras_cache_dir()}/ (KERAS_HOME), or set "
            f"model_b.weights to a weights file or null"
        ) from None


def build_model_b(p: ModelB, image_size: int, seed: int) -> keras.Model:
    """Augment -> backbone preprocessing -> backbone (inference mode) -> pooling -> heads."""
    inputs, x = pixels_in(image_size, p.augment, seed)
    x = ImageNetPreprocess(BACKBONES[p.backbone].preprocess, name="preprocess")(x)
    backbone = build_backbone(p)
    backbone.trainable = False
    # training=False keeps BatchNorm in inference mode even when layers are unfrozen.
    features = backbone(x, training=False)
    pooled = []
    if p.pooling in ("avg", "avgmax"):
        pooled.append(layers.GlobalAveragePooling2D(name="avg_pool")(features))
    if p.pooling in ("max", "avgmax"):
        pooled.append(layers.GlobalMaxPooling2D(name="max_pool")(features))
    x = pooled[0] if len(pooled) == 1 else layers.Concatenate(name="pool")(pooled)
    if p.norm == "batch":
        x = layers.BatchNormalization(name="feature_norm")(x)
    elif p.norm == "layer":
        x = layers.LayerNormalization(name="feature_norm")(x)
    x = layers.Dropout(p.dropout, name="feature_dropout")(x)
    heads = {}
    for task, units in (("age", p.age_units), ("gender", p.gender_units)):
        h = x
        for i, n in enumerate(units):
            h = layers.Dense(n, activation="relu", name=f"{task}_dense{i + 1}")(h)
            h = layers.Dropout(p.dropout, name=f"{task}_dropout{i + 1}")(h)
        heads[task] = h
    outputs = {
        "age": age_output(heads["age"], p.age_head),
        "gender": gender_output(heads["gender"]),
    }
    return keras.Model(inputs, outputs, name="model_b")


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested backbone model inside model B."""
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def unfreeze_top(backbone: keras.Model, count: int | str) -> int:
    """Make the top `count` layers trainable (all: every layer); BatchNorm stays frozen.

    Returns how many layers now have trainable weights.
    """
    backbone.trainable = True
    n = len(backbone.layers) if count == "all" else int(count)
    first = max(len(backbone.layers) - n, 0)
    for i, layer in enumerate(backbone.layers):
        frozen = i < first or isinstance(layer, layers.BatchNormalization)
        layer.trainable = not frozen
    return sum(1 for layer in backbone.layers if layer.trainable and layer.weights)


def load(path: str) -> keras.Model:
    """Load a saved model safely (no arbitrary code), with a clear error if it is not there."""
    if not os.path.isfile(path):
        raise UserError(
            f"{path}: no such model; train it with `dvc repro` (train_a / train_b) or fetch it "
            f"with `dvc pull`"
        )
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:
        raise UserError(
            f"{path}: not a model this project can load ({str(error).splitlines()[0][:200]}); "
            f"rebuild it with `dvc repro` or fetch it with `dvc pull`"
        ) from None
