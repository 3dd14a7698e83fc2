"""Model B: a pretrained backbone with age and gender heads, fine-tuned in two phases.

The backbone comes from the registry in backbones.py: an ImageNet one from
keras.applications, or the face-pretrained MobileNet read by tfjs_graph.py.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import keras
import numpy as np
from keras import layers

from agegender.errors import UserError
from agegender.models import tfjs_graph
from agegender.models.backbones import BACKBONES, pretrained_weights
from agegender.models.heads import outputs, pixels_in
from agegender.params import ModelB

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # VGG16 and ResNet50's ImageNet preprocessing


def imagenet_preprocess(x: keras.KerasTensor, mode: str) -> keras.KerasTensor:
    """Pixels in [0, 255] -> the input scaling a backbone's ImageNet weights expect."""
    if mode == "tf":  # MobileNets: [-1, 1]
        return layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(x)
    if mode == "caffe":  # VGG16, ResNet50: RGB -> BGR, ImageNet mean subtracted
        to_bgr = np.eye(3, dtype="float32")[::-1]
        return layers.Dense(
            3,
            trainable=False,
            kernel_initializer=keras.initializers.Constant(to_bgr),
            bias_initializer=keras.initializers.Constant(-np.array(CAFFE_MEAN_BGR)),
            name="preprocess",
        )(x)
    return x  # EfficientNet rescales inside its own graph


def build_backbone(p: ModelB) -> keras.Model:
    """The backbone without its classifier, for any input size.

    input_shape=(None, None, 3) makes Keras load the 224 px ImageNet file, whose weights
    fit any input size; asking for (128, 128, 3) would make it look for a file that is
    rarely in the cache.
    """
    spec = BACKBONES[p.backbone]
    weights = pretrained_weights(p.backbone, p.weights)
    kwargs = {"include_top": False, "weights": weights, "input_shape": (None, None, 3)}
    if spec.has_alpha:
        kwargs["alpha"] = p.alpha
    application = getattr(keras.applications, spec.application)
    try:
        return application(**kwargs)
    except Exception as error:
        if weights != "imagenet" or "URL fetch failure" not in str(error):
            if isinstance(error, ValueError):  # e.g. an alpha Keras has no weights for
                raise UserError(f"params.yaml: model_b: {str(error).splitlines()[0]}") from None
            if isinstance(error, OSError) and weights:  # a truncated or corrupt .h5 file
                raise UserError(
                    f"model_b.weights: cannot read the weights for {p.backbone} "
                    f"({str(error).splitlines()[0][:160]}); replace the file or set "
                    f"model_b.weights to imagenet or null"
                ) from None
            raise
        wanted = re.search(r"/([^/\s]+\.h5)", str(error))
        name = wanted.group(1) if wanted else "the weights file"
        raise UserError(
            f"model_b.weights: imagenet weights for {p.backbone} are not cached and cannot be "
            f"downloaded; put {name} in {tfjs_graph.cache_dir()}/ (KERAS_HOME), or set "
            f"model_b.weights to a weights file or null"
        ) from None


def face_backbone(weights: str | None) -> tuple[keras.Model, dict[str, list[np.ndarray]]]:
    """The face-pretrained MobileNet as Keras's own MobileNet, and the file's heads.

    "vggface2" reads the graph model from the Keras cache (sha256 checked); a path reads
    that .json; None gives random weights (tests, and the serving model's skeleton).
    """
    tensors = {}
    if weights is not None:
        source = tfjs_graph.cached_files() if weights == "vggface2" else Path(weights)
        tensors = tfjs_graph.read(source)[1]
    alpha = tfjs_graph.width(tensors) if tensors else 1.0
    backbone = keras.applications.MobileNet(
        alpha=alpha, include_top=False, weights=None, input_shape=(None, None, 3)
    )
    if tensors:
        tfjs_graph.mobilenet_weights(backbone, tensors, str(weights))
    return backbone, tfjs_graph.heads(tensors)


def init_heads(model: keras.Model, heads: dict[str, list[np.ndarray]]) -> None:
    """Start model B's heads from the face file's: both dense layers from its `feats`, the
    gender unit from its `gender_pred` (which gives P(male): negated for P(female)), the age
    distribution's first 100 ages from its `age_pred` (ages 100-120 start near 0)."""
    kernel, bias = heads["feats"]
    model.get_layer("age_dense1").set_weights([kernel, bias])
    model.get_layer("gender_dense1").set_weights([kernel, bias])
    kernel, bias = heads["gender_pred"]
    model.get_layer("gender").set_weights([-kernel, -bias])
    kernel, bias = heads["age_pred"]
    probs = model.get_layer("age_probs")
    full_kernel = np.zeros(probs.kernel.shape, "float32")
    full_bias = np.full(probs.bias.shape, bias.min() - 10.0, "float32")
    full_kernel[:, : kernel.shape[1]], full_bias[: bias.shape[0]] = kernel, bias
    probs.set_weights([full_kernel, full_bias])


def build_model_b(p: ModelB, image_size: int, seed: int, serving: bool = False) -> keras.Model:
    """Augment -> resize -> backbone preprocessing -> backbone -> pooled "features" -> heads.

    The backbone starts frozen. Its BatchNorm layers run in inference mode as long as
    they are not trainable: in Keras 3 the `training` flag of the outer `fit` reaches
    nested layers whatever a call inside the graph says (keras issue 20285), so the
    `model_b.batch_norm` policy is set through `trainable` (see `unfreeze_top`).
    The serving model is built without weights: `Trainer.save` copies the trained ones.
    """
    inputs, x = pixels_in(image_size, p.augment, seed, serving)
    if p.input_size != image_size:  # e.g. the face MobileNet sees more detail at 160 px
        x = layers.Resizing(p.input_size, p.input_size, name="resize")(x)
    x = imagenet_preprocess(x, BACKBONES[p.backbone].preprocess)
    if BACKBONES[p.backbone].pretrained == "vggface2":
        weights = None if serving else pretrained_weights(p.backbone, p.weights)
        backbone, file_heads = face_backbone(weights)
    else:
        backbone = build_backbone(dataclasses.replace(p, weights=None) if serving else p)
    backbone.trainable = False
    features = backbone(x)
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
    x = layers.Identity(name="features")(x)  # where phase 1's cached features are taken
    x = layers.Dropout(p.dropout, name="feature_dropout")(x)
    heads = {}
    for task, units in (("age", p.age_units), ("gender", p.gender_units)):
        h = x
        for i, n in enumerate(units):
            h = layers.Dense(n, activation="relu", name=f"{task}_dense{i + 1}")(h)
            h = layers.Dropout(p.dropout, name=f"{task}_dropout{i + 1}")(h)
        heads[task] = h
    out = outputs(
        heads["age"], heads["gender"], p.age_head, keep_probs=not serving and p.loss.age == "dldl"
    )
    model = keras.Model(inputs, out, name="model_b")
    if p.head_init == "pretrained" and not serving:
        init_heads(model, file_heads)
    return model


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested backbone model inside model B."""
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def split_at_features(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(pixels -> pooled features, features -> outputs): phase 1 trains the second alone."""
    features = model.get_layer("features").output
    return keras.Model(model.input, features), keras.Model(features, model.output)


def adapt_batch_norm(backbone_input: keras.Model, images: np.ndarray, batch_size: int) -> None:
    """Re-estimate the backbone's BatchNorm statistics on these faces (all batches equal).

    The ImageNet statistics were measured on 224 px photos; faces at 128 px have others.
    Each batch runs in training mode with momentum 0, which leaves that batch's statistics
    in the moving ones; their plain mean over the batches is what the layers keep.
    A fixed momentum lets TensorFlow compile the pass once (2x faster than eager calls).
    `backbone_input` maps pixels to features.
    """
    norms = [lyr for lyr in backbone_input.layers if isinstance(lyr, layers.BatchNormalization)]
    norms += [
        lyr
        for sub in backbone_input.layers
        if isinstance(sub, keras.Model)
        for lyr in sub.layers
        if isinstance(lyr, layers.BatchNormalization)
    ]
    saved = [(lyr.trainable, lyr.momentum) for lyr in norms]
    for lyr in norms:
        lyr.trainable, lyr.momentum = True, 0.0
    forward = _compiled(lambda x: backbone_input(x, training=True))
    sums = [np.zeros((2, *lyr.moving_mean.shape), "float64") for lyr in norms]
    batches = range(0, len(images), batch_size)
    for start in batches:
        forward(np.asarray(images[start : start + batch_size]))
        for total, lyr in zip(sums, norms, strict=True):
            total[0] += keras.ops.convert_to_numpy(lyr.moving_mean)
            total[1] += keras.ops.convert_to_numpy(lyr.moving_variance)
    for lyr, total, (trainable, momentum) in zip(norms, sums, saved, strict=True):
        lyr.moving_mean.assign((total[0] / len(batches)).astype("float32"))
        lyr.moving_variance.assign((total[1] / len(batches)).astype("float32"))
        lyr.trainable, lyr.momentum = trainable, momentum


def _compiled(function):
    """The function as a TensorFlow graph on that backend; as it is on the others."""
    if keras.backend.backend() != "tensorflow":
        return function
    import tensorflow as tf

    return tf.function(function, reduce_retracing=True)


def unfreeze_top(
    backbone: keras.Model, count: int | str, batch_norm: str = "frozen", momentum: float = 0.99
) -> int:
    """Make the top `count` layers trainable (all: every layer).

    BatchNorm stays frozen (inference mode, fixed statistics) unless the policy is
    "train": then it trains too, in training mode, its statistics averaged with `momentum`.
    Returns how many layers now have trainable weights.
    """
    backbone.trainable = True
    n = len(backbone.layers) if count == "all" else int(count)
    first = max(len(backbone.layers) - n, 0)
    for i, layer in enumerate(backbone.layers):
        is_norm = isinstance(layer, layers.BatchNormalization)
        layer.trainable = i >= first and (not is_norm or batch_norm == "train")
        if is_norm and layer.trainable:
            layer.momentum = momentum
    return sum(1 for layer in backbone.layers if layer.trainable and layer.weights)
