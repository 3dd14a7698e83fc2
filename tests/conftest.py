"""Shared fixtures: a synthetic UTKFace archive and a scratch project folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from agegender import params as P
from agegender.models import backbones
from agegender.prepare.store import OUTPUTS
from agegender.typed_yaml import set_dotted
from tests.synthetic import write_archive

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_ARCHIVE = SHARED / "datasets" / "UTKFace.tar.gz"
SHARED_WEIGHTS = SHARED / "weights"

# Small, fast settings for tests: the synthetic sample, 32 px, tiny models.
SMALL = [
    "data.raw=data/raw/synthetic.tar.gz",
    "data.image_size=32",
    "data.subset_size=300",
    "data.val_size=100",
    "data.test_size=100",
    "train.deterministic=false",
    "model_a.trunk_filters=[8, 16]",
    "model_a.branch_filters=[16]",
    "model_a.stem_stride=1",
    "model_a.dense_units=16",
    "model_a.fit.batch_size=32",
    "model_a.fit.epochs=1",
    "model_a.teacher=none",  # distillation is tested on its own and in tests/pipeline.py
    "model_b.backbone=mobilenet_v2",  # the face MobileNet is tested on its own (test_tfjs_graph)
    "model_b.weights=null",
    "model_b.alpha=0.35",
    "model_b.input_size=32",
    "model_b.head_init=random",
    "model_b.age_units=[16]",
    "model_b.gender_units=[16]",
    "model_b.phase1.epochs=1",
    "model_b.phase1.batch_size=32",
    "model_b.phase2.epochs=1",
    "model_b.phase2.warmup_epochs=0",
    "model_b.phase2.batch_size=32",
    "evaluate.batch_size=64",
    "report.worst_faces=4",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whatever needs the trained small pipeline is slow: `-m "not slow"` skips it all."""
    for item in items:
        if "small_pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def write_params(folder: Path, overrides: list[str]) -> P.Params:
    """params.yaml of the repo with dotted overrides, written into `folder`, checked as
    stage train_b checks it (params, then model B's backbone and weights)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for assignment in overrides:
        set_dotted(raw, assignment)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = P.load(folder / "params.yaml")
    backbones.check(params.model_b)
    return params


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory) -> Path:
    return write_archive(tmp_path_factory.mktemp("raw") / "synthetic.tar.gz", n=420, seed=0)


@pytest.fixture
def project(tmp_path, monkeypatch, synthetic_archive):
    """A scratch project folder (the cwd) with small params and the synthetic archive."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    shutil.copy(synthetic_archive, tmp_path / "data" / "raw" / "synthetic.tar.gz")
    write_params(tmp_path, SMALL)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_stages(folder: Path, archive: Path, stages: list) -> Path:
    """Run stages (their main functions) in `folder`, a scratch project with SMALL params."""
    (folder / "data" / "raw").mkdir(parents=True)
    shutil.copy(archive, folder / "data" / "raw" / "synthetic.tar.gz")
    write_params(folder, SMALL)
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        for stage in stages:
            stage()
    finally:
        os.chdir(cwd)
    return folder


@pytest.fixture(scope="session")
def prepared_synthetic(tmp_path_factory, synthetic_archive) -> Path:
    """data/prepared from the synthetic archive at 32 px, made once per session."""
    from stages import prepare

    folder = tmp_path_factory.mktemp("prepared_project")
    return _run_stages(folder, synthetic_archive, [prepare.main]) / "data" / "prepared"


@pytest.fixture(scope="session")
def small_pipeline(tmp_path_factory, synthetic_archive) -> Path:
    """A project folder where every stage but the report has run on the synthetic sample with
    tiny settings (in-process, about a minute). Returns the folder; read-only."""
    from stages import evaluate, predict, prepare, teach, train_a, train_b

    folder = tmp_path_factory.mktemp("small_pipeline")
    stages = [
        prepare.main,
        train_b.main,
        lambda: predict.main("model_b"),
        teach.main,
        train_a.main,
        lambda: predict.main("model_a"),
        evaluate.main,
    ]
    return _run_stages(folder, synthetic_archive, stages)


def md5s(folder: Path) -> dict[str, str]:
    """prepare's outputs in `folder` by name: a split folder hashes each of its .npy files."""
    out = {}
    for name in OUTPUTS:
        path = Path(folder) / name
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        digest = hashlib.md5()
        for file in files:
            digest.update(file.name.encode() + file.read_bytes())
        out[name] = digest.hexdigest()
    return out


# --- a toy project: two tiny models whose answers are known by hand (fast, no pipeline) ------


def _toy_model(age_offset: float, female: float):
    """age = the image's mean pixel value + age_offset, P(female) = `female` for any image:
    saved as a project's model is, raw pixels in."""
    import keras

    inputs = keras.Input((8, 8, 3))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    age = keras.layers.Dense(1, name="age")(mean)
    gender = keras.layers.Dense(1, activation="sigmoid", name="gender")(mean)
    model = keras.Model(inputs, {"age": age, "gender": gender})
    model.get_layer("age").set_weights([np.full((3, 1), 1 / 3), np.array([age_offset])])
    logit = np.log(female / (1 - female))
    model.get_layer("gender").set_weights([np.zeros((3, 1)), np.array([logit])])
    return model


def range_block(half_width: float, temperature: float) -> dict:
    ranges = {"edges": [0.0], "low": [-half_width], "high": [half_width]}
    return {"age_range": ranges, "gender_temperature": temperature}


@pytest.fixture(scope="module")
def toy_project(tmp_path_factory):
    """Model A says the mean pixel value with P(female) 0.2, B ten years more with 0.8;
    the ensemble weighs ages 1:3 and genders 1:1; each model has its own range."""
    folder = tmp_path_factory.mktemp("toy")
    (folder / "models").mkdir()
    _toy_model(0.0, 0.2).save(folder / "models" / "age_gender_A.keras")
    _toy_model(10.0, 0.8).save(folder / "models" / "age_gender_B.keras")
    (folder / "reports" / "eval").mkdir(parents=True)
    weights = {
        "age": {"model_a": 0.25, "model_b": 0.75},
        "gender": {"model_a": 0.5, "model_b": 0.5},
    }
    (folder / "reports" / "eval" / "ensemble.json").write_text(json.dumps(weights))
    blocks = {
        "model_a": range_block(1, 1.0),
        "model_b": range_block(2, 1.0),
        "ensemble": range_block(3, 2.0),
    }
    calibration = {"version": 1, "models": blocks}
    (folder / "reports" / "eval" / "calibration.json").write_text(json.dumps(calibration))
    return folder
