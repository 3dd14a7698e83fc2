"""Training pieces: the age-distribution loss, warm-up, BatchNorm policies, augmentation,
serving models that load without this project, and interrupted runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from agegender.data import Split, load_split
from agegender.errors import UserError
from agegender.labels import MAX_AGE
from agegender.models.augment import RandomAffine
from agegender.models.heads import copy_weights
from agegender.models.model_a import build_model_a
from agegender.models.model_b import adapt_batch_norm, backbone_of, build_model_b, unfreeze_top
from agegender.params import Loader, ParamsError
from agegender.training import features
from agegender.training.batches import Batches, resized, size_schedule
from agegender.training.features import cached_features
from agegender.training.loop import Trainer
from agegender.training.objective import age_distribution, compile_model, distilled, dldl_loss
from tests.conftest import ROOT
from tests.test_models import images, small_params


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def python(code: str, cwd, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter (no state of this test process)."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_dldl_loss_prefers_the_true_age_and_is_kl_plus_l1():
    loss = dldl_loss(sigma=2.0)
    ages = np.arange(MAX_AGE + 1)
    peaked_at = {a: np.exp(-0.5 * ((ages - a) / 2.0) ** 2) for a in (30, 40)}
    probs = np.stack([p / p.sum() for p in peaked_at.values()]).astype("float32")
    y = np.array([[30.0], [30.0]], dtype="float32")
    right, wrong = numpy(loss(y, probs))
    assert right == pytest.approx(0.0, abs=1e-3)  # same distribution, mean 30: no loss
    assert wrong > 10  # ten years off: the L1 term alone is 10
    uniform = np.full((1, MAX_AGE + 1), 1 / (MAX_AGE + 1), dtype="float32")
    target = peaked_at[30] / peaked_at[30].sum()
    kl = np.sum(target * (np.log(np.maximum(target, 1e-7)) - np.log(uniform[0])))
    expected = kl + abs(ages.mean() - 30)
    assert numpy(loss(y[:1], uniform))[0] == pytest.approx(expected, rel=1e-4)


def test_dldl_trains_the_distribution_and_serving_model_drops_it(tmp_path):
    params = small_params(tmp_path, "model_a.loss.age=dldl")
    model = build_model_a(params.model_a, 32, 0)
    assert set(model.output) == {"age", "gender", "age_probs"}
    compile_model(model, params.model_a.fit, params.model_a.loss, 1)
    y = {"age": np.full((4, 1), 30.0), "gender": np.ones((4, 1))}
    logs = model.train_on_batch(images(4), {**y, "age_probs": y["age"]}, return_dict=True)
    assert np.isfinite(logs["loss"]) and "age_probs_loss" in logs
    serving = build_model_a(params.model_a, 32, 0, serving=True)
    assert set(serving.output) == {"age", "gender"}
    copy_weights(model, serving)
    a, b = model.predict(images(3), verbose=0), serving.predict(images(3), verbose=0)
    np.testing.assert_allclose(a["age"], b["age"], rtol=1e-5)


def test_dldl_needs_the_expectation_head(tmp_path):
    with pytest.raises(ParamsError, match="model_a.loss.age: dldl .* age_head: expectation"):
        small_params(tmp_path, "model_a.loss.age=dldl", "model_a.age_head=linear")


def test_warmup_needs_cosine_and_fewer_epochs(tmp_path):
    with pytest.raises(ParamsError, match="model_b.phase1.warmup_epochs: needs schedule: cosine"):
        small_params(tmp_path, "model_b.phase1.warmup_epochs=1", "model_b.phase1.epochs=3")
    with pytest.raises(ParamsError, match="model_a.fit.warmup_epochs: must be in"):
        small_params(tmp_path, "model_a.fit.warmup_epochs=3", "model_a.fit.epochs=3")


def test_warmup_rises_from_zero_then_decays(tmp_path):
    params = small_params(tmp_path, "model_a.fit.epochs=4", "model_a.fit.warmup_epochs=1")
    model = build_model_a(params.model_a, 32, 0)
    compile_model(model, params.model_a.fit, params.model_a.loss, steps_per_epoch=10)
    schedule = model.optimizer._learning_rate
    rates = [float(numpy(schedule(step))) for step in (0, 5, 10, 25, 40)]
    peak = params.model_a.fit.learning_rate
    assert rates[0] == 0.0 and rates[1] == pytest.approx(peak / 2)
    assert rates[2] == pytest.approx(peak) and rates[2] > rates[3] > rates[4]


def test_random_affine_is_identity_at_inference_and_seeded_in_training():
    x = images(4).astype("float32")
    layer = RandomAffine(0.05, 0.1, 0.1, seed=3)
    np.testing.assert_array_equal(numpy(layer(x, training=False)), x)
    warped = numpy(layer(x, training=True))
    assert warped.shape == x.shape and not np.allclose(warped, x)
    assert warped.min() >= 0 and warped.max() <= 255  # reflect padding: no black corners
    again = numpy(RandomAffine(0.05, 0.1, 0.1, seed=3)(x, training=True))
    np.testing.assert_allclose(warped, again, atol=1e-3)
    still = numpy(RandomAffine(0.0, 0.0, 0.0, seed=3)(x, training=True))
    np.testing.assert_allclose(still, x, atol=1e-3)  # no rotation, shift or zoom: same pixels


def test_adapt_sets_statistics_to_the_mean_of_the_batches():
    inputs = keras.Input((4,))
    norm = keras.layers.BatchNormalization(momentum=0.99)
    norm.trainable = False
    model = keras.Model(inputs, norm(inputs))
    x = np.random.default_rng(0).normal(5.0, 2.0, (60, 4)).astype("float32")
    adapt_batch_norm(model, x, batch_size=20)
    batch_means = x.reshape(3, 20, 4).mean(axis=1).mean(axis=0)
    np.testing.assert_allclose(numpy(norm.moving_mean), batch_means, rtol=1e-5)
    assert not norm.trainable and norm.momentum == 0.99  # the layer is as it was


@pytest.mark.parametrize("policy", ["frozen", "adapt", "train"])
def test_batch_norm_policy_in_phase_2(tmp_path, policy):
    params = small_params(tmp_path, f"model_b.batch_norm={policy}", "model_b.bn_momentum=0.95")
    backbone = backbone_of(build_model_b(params.model_b, 32, 0))
    unfreeze_top(backbone, "all", policy, params.model_b.bn_momentum)
    norms = [lyr for lyr in backbone.layers if isinstance(lyr, keras.layers.BatchNormalization)]
    assert norms and all(lyr.trainable == (policy == "train") for lyr in norms)
    if policy == "train":
        assert all(lyr.momentum == 0.95 for lyr in norms)


def test_saved_models_load_without_this_project(tmp_path):
    """The .keras files hold only Keras layers: plain load_model works in a bare Python."""
    params = small_params(tmp_path, "model_a.loss.age=dldl", "model_b.backbone=resnet50")
    x = images(2)
    expected = {}
    for build, p in (("a", params.model_a), ("b", params.model_b)):
        builder = build_model_a if build == "a" else build_model_b
        model = builder(p, 32, 0, serving=True)
        model.save(tmp_path / f"{build}.keras")
        expected[build] = model.predict(x, verbose=0)["age"]
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, keras; x = np.load('x.npy'); "
        "[np.save(f'{m}_age.npy', keras.saving.load_model(f'{m}.keras').predict(x, verbose=0)"
        "['age']) for m in 'ab']; "
        "assert not [n for n in sys.modules if n.startswith(('stages', 'agegender'))]"
    )
    result = python(code, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for m in "ab":
        np.testing.assert_allclose(np.load(tmp_path / f"{m}_age.npy"), expected[m], rtol=1e-5)


def test_interrupted_training_keeps_the_previous_results(prepared_synthetic, tmp_path):
    params = small_params(tmp_path)
    live = tmp_path / "reports" / "train_a"
    (live / "plots").mkdir(parents=True)
    (live / "metrics.json").write_text('{"old": 1}')
    train, val = load_split("train", prepared_synthetic), load_split("val", prepared_synthetic)
    model = build_model_a(params.model_a, 32, 0)

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    trainer = Trainer(model, str(live), train, val)
    original_fit = model.fit
    model.fit = lambda *a, **kw: original_fit(*a, **{**kw, "callbacks": [Stop()]})
    with pytest.raises(KeyboardInterrupt):
        trainer.phase("fit", params.model_a.fit, params.model_a.loss)
    assert (live / "metrics.json").read_text() == '{"old": 1}'  # still the last run's
    assert trainer.staged.tmp.is_dir() and trainer.staged.tmp.parent == live.parent
    # A second run while this one lives leaves its scratch alone (its pid is alive).
    Trainer(model, str(live), train, val)
    assert trainer.staged.tmp.is_dir()


def test_only_temporaries_of_dead_runs_are_cleaned(tmp_path):
    from agegender.files import clean_stale_temps

    gone = subprocess.Popen(["true"])
    gone.wait()
    target = tmp_path / "model.keras"
    dead = tmp_path / f".model.{gone.pid}.abcd1234.keras"
    live = tmp_path / f".model.{os.getpid()}.abcd1234.keras"
    other = tmp_path / ".other.1.abcd1234.keras"
    for path in (dead, live, other):
        path.write_text("x")
    clean_stale_temps(target)
    assert not dead.exists() and live.exists() and other.exists()


def test_ctrl_c_removes_the_training_scratch_folder(tmp_path):
    code = (
        "import os, signal, keras, numpy as np\n"
        "from agegender.data import Split\n"
        "from agegender.errors import run\n"
        "from agegender.training.loop import Trainer\n"
        "def main():\n"
        "    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])\n"
        "    z = np.zeros(2)\n"
        "    split = Split(np.zeros((2, 8, 8, 3), np.uint8), z, np.array([0, 1]), z, z)\n"
        "    Trainer(model, 'reports/train_a', split, split)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "run(main)\n"
    )
    result = python(code, tmp_path, timeout=120)
    assert result.returncode == 130, result.stderr[-1000:]
    assert list((tmp_path / "reports").iterdir()) == []


def test_ctrl_c_wrapped_by_a_native_library_still_says_interrupted(tmp_path):
    """TensorFlow's pybind11 callbacks can turn KeyboardInterrupt into another exception."""
    code = (
        "import os, signal\n"
        "from agegender.errors import run\n"
        "def main():\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    except KeyboardInterrupt as error:\n"
        "        raise RuntimeError('pybind11::error_already_set: KeyboardInterrupt') from error\n"
        "run(main)\n"
    )
    result = python(code, tmp_path, timeout=60)
    assert result.returncode == 130
    assert result.stderr.strip() == "interrupted"


def test_dldl_curves_are_logged_under_the_names_dvc_yaml_plots(prepared_synthetic, tmp_path):
    params = small_params(tmp_path, "model_a.loss.age=dldl")
    train, val = load_split("train", prepared_synthetic), load_split("val", prepared_synthetic)
    model = build_model_a(params.model_a, 32, 0)
    live = tmp_path / "reports" / "train_a"
    trainer = Trainer(model, str(live), train, val)
    trainer.phase("fit", params.model_a.fit, params.model_a.loss)
    trainer.save(tmp_path / "model.keras", build_model_a(params.model_a, 32, 0, serving=True))
    for split in ("train", "val"):
        for name in ("age_loss", "age_mae", "gender_loss", "gender_accuracy"):
            assert (live / "plots" / "metrics" / split / f"{name}.tsv").is_file(), (split, name)
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["train_a"]  # no scratch left
    assert set(keras.saving.load_model(tmp_path / "model.keras").output) == {"age", "gender"}


def test_distilled_targets_move_towards_the_teacher():
    y = {
        "age": np.array([[20.0], [60.0]], "float32"),
        "gender": np.array([[0.0], [1.0]], "float32"),
        "age_probs": np.array([[20.0], [60.0]], "float32"),
    }
    teacher = {"age": np.array([30.0, 60.0], "float32"), "gender": np.array([0.4, 0.8], "float32")}
    out = distilled(y, teacher, 0.5, 2.0)
    np.testing.assert_allclose(out["gender"], [[0.0, 0.2], [1.0, 0.9]])  # [label, soft]
    np.testing.assert_array_equal(out["age"], y["age"])  # the MAE metric keeps the truth
    dist = out["age_probs"]
    assert dist.shape == (2, MAX_AGE + 1)
    np.testing.assert_allclose(dist.sum(axis=1), 1, rtol=1e-5)
    assert dist[0, 20] == pytest.approx(dist[0, 30], rel=1e-4)  # two equal peaks
    np.testing.assert_allclose(dist[1], numpy(age_distribution(np.array([[60.0]]), 2.0))[0])
    no_dldl = distilled({k: y[k] for k in ("age", "gender")}, teacher, 0.25, 2.0)
    np.testing.assert_allclose(no_dldl["age"], [[20.0, 22.5], [60.0, 60.0]])


def test_distilled_training_scores_the_labels_and_learns_the_soft_targets(tmp_path):
    """Two target columns: the loss uses the soft one, accuracy and MAE the labels."""
    params = small_params(tmp_path, "model_a.loss.age=mae", "model_a.age_head=linear")
    model = build_model_a(params.model_a, 32, 0)
    compile_model(model, params.model_a.fit, params.model_a.loss, 1)
    y = {"age": np.full((4, 1), 30.0, "float32"), "gender": np.ones((4, 1), "float32")}
    teacher = {"age": np.full(4, 30.0, "float32"), "gender": np.full(4, 0.9, "float32")}
    soft = distilled(y, teacher, 0.5, 2.0)
    hard = model.evaluate(images(4), y, verbose=0, return_dict=True)
    both = model.evaluate(images(4), soft, verbose=0, return_dict=True)
    assert both["gender_accuracy"] == hard["gender_accuracy"]  # against the labels
    assert both["age_mae"] == pytest.approx(hard["age_mae"])
    assert both["gender_loss"] != pytest.approx(hard["gender_loss"])  # from the soft column


def test_dldl_loss_on_a_distribution_equals_the_loss_on_its_age():
    loss = dldl_loss(sigma=2.0)
    probs = np.full((1, MAX_AGE + 1), 1 / (MAX_AGE + 1), dtype="float32")
    age = np.array([[30.0]], "float32")
    target = numpy(age_distribution(age, 2.0))
    assert numpy(loss(target, probs))[0] == pytest.approx(numpy(loss(age, probs))[0], rel=1e-4)


def test_teacher_none_writes_the_same_empty_bytes_and_a_stale_teacher_stops(project):
    from agegender.layout import TEACHER
    from agegender.training.objective import load_teacher
    from stages import teach

    teach.main()
    first = {p.name: p.read_bytes() for p in TEACHER.iterdir()}
    teach.main()
    assert first == {p.name: p.read_bytes() for p in TEACHER.iterdir()}
    assert set(first) == {"age.npy", "gender.npy"}
    with pytest.raises(UserError, match="0 predictions for 300 training faces"):
        load_teacher(300)


def test_one_gender_in_train_or_val_stops_before_training(prepared_synthetic, tmp_path):
    train, val = load_split("train", prepared_synthetic), load_split("val", prepared_synthetic)
    males = np.flatnonzero(val.gender == 0)
    one = Split(
        val.images[males], val.age[males], val.gender[males], val.race[males], val.name[males]
    )
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(UserError, match="the val split holds faces of one gender only"):
        Trainer(model, str(tmp_path / "live"), train, one)


def test_prepared_images_of_another_size_stop_training_in_one_line(
    prepared_synthetic, project, monkeypatch
):
    """A stage run directly after data.image_size changed: the sizes, and `dvc repro`."""
    from stages import train_a

    shutil.copytree(prepared_synthetic, project / "data" / "prepared")
    small_params(project, "data.image_size=64")
    message = r"holds 32 px images but params.yaml's data.image_size is 64 px; run `dvc repro`"
    with pytest.raises(UserError, match=message):
        train_a.main()


def test_a_training_stage_checks_it_can_write_before_it_trains(prepared_synthetic, project):
    from stages import train_a

    shutil.copytree(prepared_synthetic, project / "data" / "prepared")
    (project / "models").write_text("a file where the models folder should be")
    with pytest.raises(UserError, match="cannot write models: a file stands where a folder"):
        train_a.main()
    assert not (project / "reports" / "train_a").exists()


def test_size_schedule_splits_the_epochs_and_ends_at_full_size():
    assert size_schedule(36, [], 128) == [(128, 36)]
    assert size_schedule(36, [64, 96], 128) == [(64, 12), (96, 12), (128, 12)]
    assert size_schedule(7, [16, 24], 32) == [(16, 2), (24, 2), (32, 3)]


def test_resized_keeps_uint8_and_smooths():
    flat = np.full((3, 32, 32, 3), 200, np.uint8)
    small = resized(flat, 16)
    assert small.shape == (3, 16, 16, 3) and small.dtype == np.uint8
    assert (small == 200).all()
    stripes = np.zeros((1, 32, 32, 3), np.uint8)
    stripes[:, :, ::2] = 255  # one-pixel stripes average to grey at half the size
    inside = resized(stripes, 16)[:, 1:-1, 1:-1].astype(int)  # the edges see half a kernel
    assert np.abs(inside - 128).max() <= 1
    assert resized(flat, 32) is flat


def test_progressive_resizing_trains_small_first_and_keeps_the_best_at_full_size(
    prepared_synthetic, tmp_path, capsys
):
    params = small_params(tmp_path, "model_a.progressive=[16]", "model_a.fit.epochs=4")
    train, val = load_split("train", prepared_synthetic), load_split("val", prepared_synthetic)
    model = build_model_a(params.model_a, 32, 0)
    assert model.input_shape == (None, None, None, 3)  # the training model takes any size
    live = tmp_path / "live"
    trainer = Trainer(model, str(live), train, val)
    scored = []
    keep = trainer.keep_if_best
    trainer.keep_if_best = lambda loss: scored.append(loss) or keep(loss)  # type: ignore[method-assign]
    trainer.phase("fit", params.model_a.fit, params.model_a.loss, sizes=[16])
    out = capsys.readouterr().out
    assert "fit: 2 epochs at 16 px" in out and "fit: 2 epochs at 32 px" in out
    serving = build_model_a(params.model_a, 32, 0, serving=True)
    assert serving.input_shape == (None, 32, 32, 3)
    trainer.save(tmp_path / "model.keras", serving)
    assert trainer.summary["epochs"] == 4
    losses = (live / "plots" / "metrics" / "val" / "loss.tsv").read_text().splitlines()[1:]
    val_loss = [float(line.split("\t")[-1]) for line in losses]
    assert len(val_loss) == 4 and len(scored) == 2  # the best is chosen at full size only
    assert trainer.best_loss == min(val_loss[2:]) == min(scored)


def test_batches_are_seeded_per_epoch_and_cover_every_row_once():
    x = np.arange(10 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3)
    y = {"age": np.arange(10, dtype="float32")[:, None]}
    batches = Batches(x, y, 4, seed=7)
    assert len(batches) == 3
    first = [batches[i][1]["age"][:, 0].tolist() for i in range(3)]
    assert sorted(sum(first, [])) == list(range(10))  # every row once, the last batch short
    assert first == [Batches(x, y, 4, seed=7)[i][1]["age"][:, 0].tolist() for i in range(3)]
    batches.on_epoch_end()
    assert [batches[i][1]["age"][:, 0].tolist() for i in range(3)] != first
    assert batches.epoch == 1 and Batches(x, y, 4, seed=7, epoch=1)[0][1]["age"].tolist() == (
        batches[0][1]["age"].tolist()
    )  # a later fit goes on from its epoch, not from the first order again
    row = int(batches[0][1]["age"][0, 0])
    np.testing.assert_array_equal(batches[0][0][0], x[row])  # images stay with their labels
    in_order = Batches(x, None, 4)
    np.testing.assert_array_equal(in_order[2], x[8:])  # no seed: in order, images only
    assert Batches(x, None, 4, size=2)[0].shape == (4, 2, 2, 3)


STREAM_RUN = """
import hashlib, sys
import numpy as np
from agegender import params as P
from agegender.data import load_split
from agegender.models.model_a import build_model_a
from agegender.training.loop import Trainer, setup
params = P.load()
setup(0, params.train)
train, val = load_split("train", sys.argv[1]), load_split("val", sys.argv[1])
model = build_model_a(params.model_a, 32, 0)
trainer = Trainer(model, "live", train, val, None, params.train.loader, params.seed)
trainer.phase("fit", params.model_a.fit, params.model_a.loss)
print(hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest())
"""


def test_streamed_batches_train_the_same_weights_with_one_or_two_workers(
    prepared_synthetic, tmp_path
):
    digests = []
    for workers in (1, 2):
        folder = tmp_path / f"workers-{workers}"
        folder.mkdir()
        small_params(
            folder,
            "train.deterministic=true",
            "train.loader.kind=stream",
            f"train.loader.workers={workers}",
            "model_a.fit.epochs=2",
        )
        result = subprocess.run(
            [sys.executable, "-c", STREAM_RUN, str(prepared_synthetic)],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 0, result.stderr[-2000:]
        digests.append(result.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1]


def test_streamed_features_are_memory_mapped_and_equal_the_in_memory_ones(
    prepared_synthetic, tmp_path, monkeypatch
):
    """train.loader stream: phase 1's features go to files beside data/features, a block at a
    time, and hold the same numbers as the arrays loader's (mirrored faces after the rest)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(features, "FEATURE_BLOCK", 48)  # several blocks, the last one short
    train, val = load_split("train", prepared_synthetic), load_split("val", prepared_synthetic)
    pixels = keras.Input((32, 32, 3))
    extractor = keras.Model(pixels, keras.layers.GlobalAveragePooling2D()(pixels))
    pooled = keras.Input((3,))
    head = keras.Model(pooled, {"gender": keras.layers.Dense(1)(pooled)})
    got = {}
    for kind in ("arrays", "stream"):
        loader = Loader(kind=kind, workers=1)
        got[kind] = cached_features(extractor, head, train, val, 32, loader)
    (x, y), (val_x, _) = got["stream"]
    assert isinstance(x, np.memmap) and isinstance(val_x, np.memmap)
    assert Path(x.filename).parent.name.startswith(".features.")
    assert Path(x.filename).parent.parent == tmp_path / "data"
    assert x.shape == (2 * len(train), 3) and len(y["gender"]) == 2 * len(train)
    (x_in_memory, _), (val_in_memory, _) = got["arrays"]
    np.testing.assert_allclose(x, x_in_memory, rtol=1e-6)
    np.testing.assert_allclose(val_x, val_in_memory, rtol=1e-6)
    mirrored = train.images[0, :, ::-1].mean(axis=(0, 1))
    np.testing.assert_allclose(x[len(train)], mirrored, rtol=1e-5)
