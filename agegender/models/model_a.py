"""Model A: a multi-task CNN trained from scratch (shared conv trunk, age and gender branches)."""

from __future__ import annotations

import keras
from keras import layers

from agegender.models.heads import outputs, pixels_in
from agegender.params import ModelA

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


def build_model_a(p: ModelA, image_size: int, seed: int, serving: bool = False) -> keras.Model:
    """Shared conv trunk, then an age branch and a gender branch with their own blocks.

    Under progressive resizing the training model takes any size; the serving model always
    takes image_size.
    """
    size = None if p.progressive and not serving else image_size
    inputs, x = pixels_in(size, p.augment, seed, serving)
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
    out = outputs(
        _branch(x, p, "age"),
        _branch(x, p, "gender"),
        p.age_head,
        keep_probs=not serving and p.loss.age == "dldl",
    )
    return keras.Model(inputs, out, name="model_a")
