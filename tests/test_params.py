import subprocess
import sys

import numpy as np
import pytest

from agegender import params as P
from tests.conftest import ROOT, SMALL, write_params


def test_repo_params_load():
    params = P.load(ROOT / "params.yaml")
    assert params.data.subset_size == 5000 and params.data.val_size == 1000
    assert params.model_b.phase2.unfreeze in ("all",) or isinstance(
        params.model_b.phase2.unfreeze, int
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.val_size=5000", "data.val_size: must be smaller than data.subset_size"),
        ("data.image_size=16", "data.image_size: must be >= 32"),
        ("data.image_size=32", "data.image_size: must be >= 64 for model_a"),
        ("data.image_size=big", "data.image_size: must be an integer"),
        ("model_a.dropout=1.5", "model_a.dropout: must be in [0, 1)"),
        ("model_a.pooling=max", "model_a.pooling: must be one of ['flatten', 'avg']"),
        ("model_a.fit.optimizer=adagrad", "model_a.fit.optimizer: must be one of"),
        ("model_a.trunk_filters=[32, -1]", "model_a.trunk_filters: must be positive"),
        ("model_a.batch_norm=1", "model_a.batch_norm: must be true or false"),
        ("model_b.backbone=alexnet", "model_b.backbone: unknown backbone 'alexnet'"),
        ("model_b.phase2.unfreeze=some", "model_b.phase2.unfreeze:"),
        ("model_b.weights=missing.h5", "model_b.weights: file 'missing.h5' not found"),
        ("seed=1.5", "seed: must be an integer"),
        ("seed=1e23", "seed: must be an integer"),
        ("seed=-1", "seed: must be in [0, 4294967295], got -1"),
        ("seed=4294967296", "seed: must be in [0, 4294967295]"),
        ("model_b.alpha=.inf", "model_b.alpha: must be a finite number, got inf"),
        ("model_a.l2=.inf", "model_a.l2: must be a finite number, got inf"),
        ("model_a.l2=.nan", "model_a.l2: must be a finite number, got nan"),
        ("model_a.l2=1e999", "model_a.l2: must be a finite number"),
        (f"model_a.l2={10**400}", "model_a.l2: must be a finite number"),
        ("model_a.progressive=[96, 64]", "model_a.progressive: must increase and stay below"),
        ("model_a.progressive=[64, 128]", "below data.image_size (128), got [64, 128]"),
        ("model_a.progressive=[32]", "model_a.progressive: sizes must be >= 64 for model_a"),
        ("model_a.progressive=64", "model_a.progressive: must be a list"),
        ("data.train_all=1", "data.train_all: must be true or false"),
    ],
)
def test_bad_value_names_the_key(tmp_path, override, message):
    with pytest.raises(P.ParamsError) as error:
        write_params(tmp_path, [override])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_and_missing_keys(tmp_path):
    with pytest.raises(P.ParamsError, match=r"model_a\.colour: unknown key"):
        write_params(tmp_path, ["model_a.colour=red"])
    text = (ROOT / "params.yaml").read_text().replace("  val_size: 1000", "")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(P.ParamsError, match=r"data\.val_size: missing"):
        P.load(tmp_path / "params.yaml")


def test_yaml_scientific_notation_is_a_number(tmp_path):
    params = write_params(tmp_path, ["model_b.phase2.learning_rate='1e-5'"])
    assert params.model_b.phase2.learning_rate == pytest.approx(1e-5)


def test_unfreeze_takes_a_count_or_all(tmp_path):
    assert write_params(tmp_path, ["model_b.phase2.unfreeze=40"]).model_b.phase2.unfreeze == 40
    assert write_params(tmp_path, ["model_b.phase2.unfreeze=all"]).model_b.phase2.unfreeze == "all"


def test_stage_prints_one_line_and_exits_2(tmp_path):
    write_params(tmp_path, [])
    text = (tmp_path / "params.yaml").read_text().replace("image_size: 128", "image_size: 20")
    (tmp_path / "params.yaml").write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "stages.prepare"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "data.image_size: must be >= 32" in result.stderr


def test_largest_seed_is_fine(tmp_path):
    assert write_params(tmp_path, ["seed=4294967295"]).seed == 2**32 - 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary", "not a text file (byte 0 is not UTF-8)"),
        (b"seed: 1\x00\n", "not valid YAML (unacceptable character #x0000"),
        (b"seed: 1\nseed: 2\n", ", line 2, column 1: not valid YAML (duplicate key 'seed'"),
        (b"data:\n  raw: x\n  raw: y\n", ", line 3, column 3: not valid YAML (duplicate key 'raw'"),
        (b"seed: [1\ndata: 2\n", ", line 2, column 5: not valid YAML (expected ',' or ']'"),
        (b"", ": must be a mapping of sections (seed, data, ...); it is empty"),
        (b"- 1\n", ": must be a mapping of sections (seed, data, ...); got [1]"),
    ],
)
def test_unreadable_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_bytes(text)
    with pytest.raises(P.ParamsError) as error:
        P.load(path)
    assert str(error.value).startswith(f"{path}") and message in str(error.value)
    assert "\n" not in str(error.value) and str(error.value).count("params.yaml") == 1


def test_weights_file_must_be_whole_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        f["kernel"] = np.zeros((100, 100))
    (tmp_path / "truncated.h5").write_bytes(good.read_bytes()[:-1000])
    (tmp_path / "garbage.h5").write_bytes(b"<html>not found</html>" * 50)
    imagenet = ["model_b.backbone=mobilenet_v2", "model_b.head_init=random"]
    assert write_params(tmp_path, [*imagenet, f"model_b.weights={good}"]).model_b.weights == str(
        good
    )
    cases = {
        "truncated.h5": "is truncated or damaged (",
        "garbage.h5": "is not an HDF5 weights file",
    }
    for name, problem in cases.items():
        with pytest.raises(P.ParamsError) as error:
            write_params(tmp_path, [*imagenet, f"model_b.weights={tmp_path / name}"])
        assert f"model_b.weights: file '{tmp_path / name}' {problem}" in str(error.value)
        assert "\n" not in str(error.value)


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    """Nine levels of `&a` / `*a` lists expand to 10**9 values: refused while parsing."""
    lines = ["seed: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(P.ParamsError, match=r"line 2, column \d+: not valid YAML \(alias \*a0"):
        P.load(path)


def test_a_huge_value_is_shown_short(tmp_path):
    with pytest.raises(P.ParamsError) as error:
        write_params(tmp_path, ["seed=[" + ", ".join(["1"] * 100000) + "]"])
    assert "seed: must be an integer, got [1, 1, 1, 1, 1, 1, ...]" in str(error.value)
    assert len(str(error.value)) < 300


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["train.distribute.backend=jax", "train.distribute.devices=3"],
            "model_a.fit.batch_size: must divide by train.distribute.devices (3), got 32",
        ),
        (
            ["train.distribute.devices=2"],
            "train.distribute.devices: 2 devices need backend jax",
        ),
        (["train.distribute.devices=0"], "train.distribute.devices: must be >= 1"),
    ],
)
def test_params_that_cannot_be_distributed_stop(tmp_path, overrides, message):
    with pytest.raises(P.ParamsError) as error:
        write_params(tmp_path, [*SMALL, *overrides])
    assert message in str(error.value)


def test_progressive_resizing_needs_avg_pooling_and_an_epoch_a_size(tmp_path):
    flatten = ["model_a.progressive=[64, 96]", "model_a.pooling=flatten"]
    with pytest.raises(P.ParamsError, match="model_a.progressive: needs model_a.pooling: avg"):
        write_params(tmp_path, flatten)
    few = ["model_a.progressive=[64, 96]", "model_a.fit.epochs=2"]
    with pytest.raises(P.ParamsError, match="3 sizes need model_a.fit.epochs >= 3, got 2"):
        write_params(tmp_path, few)
    assert write_params(tmp_path, [flatten[0]]).model_a.progressive == [64, 96]
