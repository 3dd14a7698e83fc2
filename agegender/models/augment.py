"""Training-time augmentation, as layers of the training model (the serving model has none)."""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from agegender.params import Augment


@keras.saving.register_keras_serializable(package="agegender")
class RandomAffine(layers.Layer):
    """Rotation, translation and zoom as one bilinear warp, in training only.

    Three separate Keras layers warp (and blur) each image three times and cost about a
    quarter of model A's training step; one transform does the same geometry once.
    """

    def __init__(self, rotation: float, translation: float, zoom: float, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.translation, self.zoom = rotation, translation, zoom
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        shape = ops.shape(images)
        n, height, width = shape[0], ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")

        def uniform(limit: float):
            return keras.random.uniform((n,), -limit, limit, seed=self.generator)

        angle = uniform(self.rotation) * 2 * math.pi  # rotation is a fraction of a full turn
        scale = 1.0 + uniform(self.zoom)  # input pixels per output pixel: > 1 zooms out
        shift_x, shift_y = uniform(self.translation) * width, uniform(self.translation) * height
        cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
        cx, cy = (width - 1) / 2, (height - 1) / 2
        # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): about the centre.
        transform = ops.stack(
            [
                cos,
                -sin,
                cx - cos * cx + sin * cy + shift_x,
                sin,
                cos,
                cy - sin * cx - cos * cy + shift_y,
                ops.zeros_like(cos),
                ops.zeros_like(cos),
            ],
            axis=1,
        )
        return ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode="reflect"
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "translation": self.translation,
            "zoom": self.zoom,
            "seed": self.seed,
        }


def augment(x: keras.KerasTensor, aug: Augment, seed: int) -> keras.KerasTensor:
    """Training-time augmentation of float pixels in [0, 255]."""
    if aug.flip:
        x = layers.RandomFlip("horizontal", seed=seed, name="augment_flip")(x)
    if aug.rotation or aug.translation or aug.zoom:
        x = RandomAffine(
            aug.rotation, aug.translation, aug.zoom, seed=seed + 1, name="augment_affine"
        )(x)
    if aug.brightness:
        x = layers.RandomBrightness(
            aug.brightness, value_range=(0, 255), seed=seed + 4, name="augment_brightness"
        )(x)
    if aug.contrast:
        x = layers.RandomContrast(
            aug.contrast, value_range=(0, 255), seed=seed + 5, name="augment_contrast"
        )(x)
    return x
