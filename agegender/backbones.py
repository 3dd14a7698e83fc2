"""The pretrained backbones model B can use: adding one is one line in BACKBONES.

Kept free of Keras imports so that params validation stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    application: str  # class name in keras.applications
    preprocess: str  # input scaling the ImageNet weights expect: "tf", "caffe" or "none"
    has_alpha: bool = False  # takes a width multiplier (MobileNets)


BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone("MobileNetV2", "tf", has_alpha=True),
    "mobilenet": Backbone("MobileNet", "tf", has_alpha=True),
    "efficientnet_b0": Backbone("EfficientNetB0", "none"),  # rescales inside the model
    "resnet50": Backbone("ResNet50", "caffe"),
    "vgg16": Backbone("VGG16", "caffe"),
}
