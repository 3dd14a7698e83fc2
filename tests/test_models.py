import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from agegender import params as P
from agegender.data import load_split
from agegender.errors import UserError
from agegender.evaluate.inference import load
from agegender.layout import MODEL_A, MODEL_B
from agegender.models.backbones import BACKBONES
from agegender.models.model_a import build_model_a
from agegender.models.model_b import backbone_of, build_model_b, unfreeze_top
from agegender.training.loop import Trainer, setup
from agegender.training.objective import compile_model
from tests.conftest import ROOT, SHARED_WEIGHTS, SMALL, write_params


def small_params(tmp_path, *overrides) -> P.Params:
    return write_params(tmp_path, [*SMALL, *overrides])


def images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def check_outputs(out, n):
    assert set(out) == {"age", "gender"}
    for key in ("age", "gender"):
        value = keras.ops.convert_to_numpy(out[key])
        assert value.shape == (n, 1) and value.dtype == np.float32 and np.all(np.isfinite(value))
    gender = keras.ops.convert_to_numpy(out["gender"])
    assert np.all((gender >= 0) & (gender <= 1))


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        [
            "model_a.pooling=flatten",
            "model_a.age_head=linear",
            "model_a.loss.age=mae",
            "model_a.batch_norm=false",
        ],
        ["model_a.stem_stride=4", "model_a.convs_per_block=1", "model_a.branch_filters=[]"],
        ["data.image_size=64", "model_a.kernel_size=5", "model_a.loss.age=huber"],
    ],
)
def test_model_a_shapes(tmp_path, overrides):
    params = small_params(tmp_path, *overrides)
    size = params.data.image_size
    model = build_model_a(params.model_a, size, 0, serving=True)
    assert model.input.dtype == "uint8" and tuple(model.input.shape) == (None, size, size, 3)
    check_outputs(model(images(3, size), training=False), 3)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop", "sgd"])
@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_every_optimizer_trains_a_step(tmp_path, optimizer, decay):
    overrides = [f"model_a.fit.optimizer={optimizer}", f"model_a.fit.weight_decay={decay}"]
    params = small_params(tmp_path, *overrides)
    model = build_model_a(params.model_a, 32, 0)
    compile_model(model, params.model_a.fit, params.model_a.loss, 1)
    age = np.full((4, 1), 30.0)
    targets = {"age": age, "gender": np.ones((4, 1)), "age_probs": age}  # default loss: dldl
    logs = model.train_on_batch(images(4), targets, return_dict=True)
    assert np.isfinite(logs["loss"])


def test_saved_model_reloads_safely_with_same_predictions(tmp_path):
    params = small_params(tmp_path)
    x = images(5)
    for build, p in ((build_model_a, params.model_a), (build_model_b, params.model_b)):
        model = build(p, 32, 0, serving=True)
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        again = load(str(path))
        before, after = model.predict(x, verbose=0), again.predict(x, verbose=0)
        for key in ("age", "gender"):
            np.testing.assert_allclose(before[key], after[key], rtol=1e-5, atol=1e-5)


def test_augmentation_only_in_training(tmp_path):
    params = small_params(tmp_path, "model_a.spatial_dropout=0", "model_a.dropout=0")
    model = build_model_a(params.model_a, 32, 0)
    x = images(8)
    first, second = model(x, training=False), model(x, training=False)
    np.testing.assert_array_equal(np.asarray(first["age"]), np.asarray(second["age"]))
    augmented = model(x, training=True)
    assert not np.allclose(np.asarray(first["age"]), np.asarray(augmented["age"]))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("size", [64, 128])
def test_every_backbone_builds_without_weights(tmp_path, backbone, size):
    params = small_params(
        tmp_path, f"model_b.backbone={backbone}", f"data.image_size={size}", "model_b.alpha=1.0"
    )
    model = build_model_b(params.model_b, size, 0)
    check_outputs(model(images(2, size), training=False), 2)
    assert not backbone_of(model).trainable


def _backbone_state(model):
    backbone = backbone_of(model)
    return {
        (layer.name, i): np.array(keras.ops.convert_to_numpy(w))
        for layer in backbone.layers
        for i, w in enumerate(layer.weights)
    }


def test_phases_change_only_what_they_should(prepared_synthetic, tmp_path):
    params = small_params(
        tmp_path, "model_b.phase1.epochs=1", "model_b.phase2.epochs=1", "model_b.phase2.unfreeze=12"
    )
    setup(0, params.train)
    train = load_split("train", prepared_synthetic)
    val = load_split("val", prepared_synthetic)
    model = build_model_b(params.model_b, 32, 0)
    start = _backbone_state(model)
    trainer = Trainer(model, str(tmp_path / "live"), train, val)
    trainer.phase("phase1", params.model_b.phase1, params.model_b.loss)
    after1 = _backbone_state(model)
    assert all(np.array_equal(start[k], after1[k]) for k in start), "phase 1 moved the backbone"
    backbone = backbone_of(model)
    unfreeze_top(backbone, 12, "frozen")
    unfrozen = {layer.name for layer in backbone.layers[-12:]}
    trainer.phase("phase2", params.model_b.phase2, params.model_b.loss)
    after2 = _backbone_state(model)
    changed = {
        name for (name, i) in start if not np.array_equal(after1[(name, i)], after2[(name, i)])
    }
    assert changed, "phase 2 trained nothing in the backbone"
    assert changed <= unfrozen, f"frozen layers changed: {changed - unfrozen}"
    batch_norms = {
        layer.name
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert not changed & batch_norms, "BatchNorm weights or moving statistics changed"


def test_offline_imagenet_gives_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for proxy in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # nothing listens: instant refusal
    params = small_params(tmp_path, "model_b.backbone=resnet50", "model_b.weights=imagenet")
    with pytest.raises(UserError) as error:
        build_model_b(params.model_b, 32, 0)
    message = str(error.value)
    assert "\n" not in message
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "keras" / "models") in message


@pytest.mark.skipif(not SHARED_WEIGHTS.exists(), reason="../shared/weights not here")
def test_cached_imagenet_weights_load_at_any_size(tmp_path, monkeypatch):
    (tmp_path / "keras" / "models").mkdir(parents=True)
    for f in SHARED_WEIGHTS.glob("*.h5"):
        shutil.copy(f, tmp_path / "keras" / "models")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    params = small_params(tmp_path, "model_b.weights=imagenet", "data.image_size=128")
    model = build_model_b(params.model_b, 128, 0)
    random = build_model_b(small_params(tmp_path, "data.image_size=128").model_b, 128, 0)
    first = backbone_of(model).layers[1].weights[0]
    assert not np.allclose(
        keras.ops.convert_to_numpy(first),
        keras.ops.convert_to_numpy(backbone_of(random).layers[1].weights[0]),
    )
    check_outputs(model(images(2, 128), training=False), 2)


def _assert_learned(folder, split, model_path):
    from agegender.evaluate.inference import predict

    model = load(model_path)
    pred = predict(model, split.images, 64, flips=(False,))[False]
    accuracy = np.mean((pred[:, 1] >= 0.5) == split.gender)
    mae = np.mean(np.abs(pred[:, 0] - split.age))
    baseline = np.mean(np.abs(split.age - split.age.mean()))
    assert accuracy > 0.75, f"gender accuracy {accuracy:.2f} is not clearly above chance"
    assert mae < 0.8 * baseline, f"age MAE {mae:.1f} not clearly below the mean's {baseline:.1f}"


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["arrays", "stream"])
def test_model_a_learns_on_synthetic_faces(prepared_synthetic, tmp_path, monkeypatch, loader):
    from stages import train_a

    # 30 epochs of batch 16: enough steps for BatchNorm's moving statistics to settle
    small_params(
        tmp_path,
        "model_a.fit.epochs=30",
        "model_a.fit.batch_size=16",
        f"train.loader.kind={loader}",
        "train.loader.workers=2",
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(prepared_synthetic)
    monkeypatch.chdir(tmp_path)
    train_a.main()
    _assert_learned(tmp_path, load_split("val", prepared_synthetic), MODEL_A.file)


@pytest.mark.slow
def test_model_b_learns_in_two_phases(prepared_synthetic, tmp_path, monkeypatch):
    from stages import train_b

    if not SHARED_WEIGHTS.exists():  # a frozen, randomly initialised backbone learns nothing
        pytest.skip("needs the ImageNet weights in ../shared/weights (scripts/use_shared.sh)")
    (tmp_path / "keras" / "models").mkdir(parents=True)
    shutil.copy(next(SHARED_WEIGHTS.glob("mobilenet_v2*.h5")), tmp_path / "keras" / "models")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    weights = ["model_b.weights=imagenet"]
    small_params(
        tmp_path,
        *weights,
        "model_b.phase1.epochs=6",
        "model_b.phase2.epochs=4",
        "model_b.phase1.learning_rate=0.003",
        "model_b.phase2.learning_rate=0.0003",
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(prepared_synthetic)
    monkeypatch.chdir(tmp_path)
    train_b.main()
    _assert_learned(tmp_path, load_split("val", prepared_synthetic), MODEL_B.file)


def test_jax_backend_trains_a_step(tmp_path):
    pytest.importorskip("jax")
    code = (
        "import numpy as np, keras; from agegender import params as P; "
        "from agegender.models.model_a import build_model_a; "
        "from agegender.training.objective import compile_model; "
        "p = P.load('params.yaml'); m = build_model_a(p.model_a, 32, 0); "
        "compile_model(m, p.model_a.fit, p.model_a.loss, 1); "
        "x = np.zeros((4, 32, 32, 3), np.uint8); "
        "y = {k: np.ones((4, 1), 'float32') for k in ('age', 'gender', 'age_probs')}; "
        "h = m.fit(x, y, epochs=1, verbose=0); assert keras.backend.backend() == 'jax'; "
        "print('loss', h.history['loss'][0])"
    )
    small_params(tmp_path)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loss" in result.stdout
