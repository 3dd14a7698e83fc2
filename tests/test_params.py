import subprocess
import sys

import pytest

from stages import params as P
from tests.conftest import ROOT, write_params


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
