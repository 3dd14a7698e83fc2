"""Bad input, round three: each case ends in one line naming the file or the param (or is
handled), and writes nothing wrong."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agegender import files, runtime
from agegender.errors import UserError
from agegender.labels import parse_name
from agegender.models import tfjs_graph
from agegender.params import Loader
from agegender.prepare.archive import read_source
from agegender.serve import predict as cli_predict
from agegender.serve.api import array_image
from agegender.serve.export import export
from agegender.training import features
from agegender.training.objective import load_teacher
from agegender.typed_yaml import ParamsError
from stages import prepare
from tests.conftest import write_params
from tests.synthetic import draw_face, faces, jpeg

STAMP = "20170101000000000.jpg.chip.jpg"


def one_line(error: pytest.ExceptionInfo, *words: str) -> None:
    text = str(error.value)
    assert "\n" not in text, text
    for word in words:
        assert word in text, (word, text)


@pytest.mark.parametrize(
    "name",
    [
        "1" * 20 + f"_0_0_{STAMP}",  # overflowed SQLite's INTEGER
        "1" * 5000 + f"_0_0_{STAMP}",  # Python's 4,300-digit limit for int()
        f"\u0662\u0665_0_0_{STAMP}",  # Arabic-Indic 25
        f"\uff12\uff15_0_0_{STAMP}",  # fullwidth 25
        f"25_\u0661_0_{STAMP}",  # Arabic-Indic gender
        f"25_0_0_{STAMP}" + "x" * 300,  # over 255 characters
    ],
)
def test_odd_ages_and_long_names_are_malformed_not_errors(name):
    labels = parse_name(name)
    assert not labels.usable and labels.problem


def test_ascii_digits_still_parse():
    labels = parse_name(f"25_1_3_{STAMP}")
    assert (labels.age, labels.gender, labels.race, labels.usable) == (25, 1, 3, True)


def _archive(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(f"UTKFace/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_many_conflicting_copies_and_long_names_cost_linear_space(project):
    """300 copies of one JPEG with different ages, and 10 names of 2,000 characters:
    faces.csv grows with each row once, and names.npy keeps the usual width. (Names of
    100,000 characters behave the same here, but Python 3.11.7's tarfile takes 9 s to parse
    each such PAX header: CVE-2024-6232, fixed in 3.11.10.)"""
    copy = jpeg(draw_face(40, 0, np.random.default_rng(1)))
    members = list(faces(420, 0))
    members += [(f"{age % 100}_0_0_{age:017d}.jpg.chip.jpg", copy) for age in range(300)]
    members += [(f"30_1_0_{STAMP}" + f"{i}" * 2_000, copy) for i in range(10)]
    _archive(project / "data" / "raw" / "synthetic.tar.gz", members)
    prepare.main()
    table = pd.read_csv(project / "data" / "prepared" / "faces.csv")
    conflicts = table[table.status == "conflict"]
    assert len(conflicts) >= 300  # the synthetic sample has its own conflicting pair too
    assert conflicts.reason.str.len().max() < 400  # five names and a count, not 300 names
    assert (table.reason.str.contains("over 255 characters", na=False)).sum() == 10
    names = np.load(project / "data" / "prepared" / "train" / "name.npy", mmap_mode="r")
    assert names.dtype.itemsize <= 4 * 255


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_raw_path_that_is_no_regular_file_is_refused(tmp_path, kind):
    if kind == "fifo":
        source = tmp_path / "pipe"
        os.mkfifo(source)
    else:
        source = Path("/dev/zero")
    with pytest.raises(UserError) as error:
        list(read_source(source))
    one_line(error, str(source), "not a regular file")


def test_params_nested_too_deeply_are_one_line(tmp_path):
    from agegender import params as P

    (tmp_path / "params.yaml").write_text("seed: " + "[" * 500 + "]" * 500 + "\n")
    with pytest.raises(ParamsError) as error:
        P.load(tmp_path / "params.yaml")
    one_line(error, "params.yaml", "nested too deeply")


def _deep(root, levels: int):
    path = root
    for _ in range(levels):
        path = path / "d"
    path.mkdir(parents=True)
    (path / "a.jpg").write_bytes(b"x")
    return root


def test_folders_nested_too_deep_are_one_line_in_prepare_and_predict(tmp_path):
    root = _deep(tmp_path / "faces", files.MAX_DEPTH + 5)
    with pytest.raises(UserError) as error:
        list(read_source(root))
    one_line(error, "nested over")
    with pytest.raises(UserError) as error:
        list(cli_predict.walk(str(root)))
    one_line(error, "nested over")
    shallow = _deep(tmp_path / "ok", 10)
    assert len(files.walk_files(shallow)) == 1 and len(list(cli_predict.walk(str(shallow)))) == 1


def test_export_onto_a_folder_named_like_its_file_is_one_line(tmp_path):
    (tmp_path / "out" / "model.tflite").mkdir(parents=True)
    with pytest.raises(UserError) as error:
        export(None, tmp_path / "out")
    one_line(error, "model.tflite", "is a folder")


def test_non_finite_teacher_targets_stop_train_a(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "teacher").mkdir(parents=True)
    age = np.array([30.0, np.nan, 20.0], "float32")
    np.save(tmp_path / "data" / "teacher" / "age.npy", age)
    np.save(tmp_path / "data" / "teacher" / "gender.npy", np.full(3, 0.5, "float32"))
    with pytest.raises(UserError) as error:
        load_teacher(3)
    one_line(error, "age.npy", "not finite")


def test_more_devices_than_the_host_can_give_make_none(tmp_path, monkeypatch):
    for name in ("XLA_FLAGS", "KERAS_BACKEND", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        # configure sets them: setenv first records the value to restore (delenv of a
        # missing variable records nothing, and jax would leak into later subprocesses)
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    write_params(
        tmp_path,
        [
            "train.distribute.backend=jax",
            "train.distribute.devices=1000",
            "train.distribute.scale_batch=true",
        ],
    )
    runtime.configure(tmp_path / "params.yaml")
    assert "device_count" not in os.environ.get("XLA_FLAGS", "")


@pytest.mark.parametrize(
    "overrides",
    [
        ["model_a.fit.epochs=0"],
        ["model_b.phase1.epochs=0", "model_b.phase2.epochs=0", "model_b.phase2.warmup_epochs=0"],
    ],
)
def test_zero_epochs_are_refused_in_params(tmp_path, overrides):
    with pytest.raises(ParamsError) as error:
        write_params(tmp_path, overrides)
    one_line(error, overrides[0].split("=")[0])


def test_a_full_disk_for_the_feature_cache_is_one_line(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(features.os, "posix_fallocate", full)
    monkeypatch.setattr(features, "FEATURES", tmp_path / "features")

    class Extractor:
        output_shape = (None, 8)

        def predict(self, x, **kwargs):
            return np.zeros((len(x), 8), "float32")

    loader = Loader(kind="stream", workers=1)
    split = type("Split", (), {"images": np.zeros((4, 8, 8, 3), "uint8"), "__len__": lambda s: 4})()
    with pytest.raises(UserError) as error:
        features.cached_features(Extractor(), None, split, split, 2, loader)
    one_line(error, "do not fit on the disk", "train.loader.kind")


def test_graph_weights_without_their_bin_or_paths_are_one_line(tmp_path):
    spec = {"modelTopology": {"node": []}, "weightsManifest": [{"paths": ["m.bin"], "weights": []}]}
    (tmp_path / "m.json").write_text(json.dumps(spec))
    with pytest.raises(UserError) as error:
        tfjs_graph.read(tmp_path / "m.json")
    one_line(error, "m.bin", "cannot be read")
    spec["weightsManifest"] = [{"weights": []}]
    (tmp_path / "m.json").write_text(json.dumps(spec))
    with pytest.raises(UserError) as error:
        tfjs_graph.read(tmp_path / "m.json")
    one_line(error, "m.json", "paths")


@pytest.mark.parametrize("shape", [(200, 200, 5), (0, 0, 3), (0, 10)])
def test_odd_arrays_are_one_line(shape):
    with pytest.raises(UserError) as error:
        array_image(np.zeros(shape, np.uint8))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("shape", [(20, 20, 1), (20, 20, 4), (20, 20)])
def test_gray_and_rgba_arrays_are_read_as_rgb(shape):
    assert array_image(np.zeros(shape, np.uint8)).mode == "RGB"


def test_a_last_partial_batch_is_cut_to_split_over_the_devices(capsys):
    from agegender.training.distribute import whole_batches

    x = np.zeros((240, 4, 4, 3), "uint8")
    y = {"age": np.zeros((240, 1)), "gender": np.zeros((240, 1))}
    cut_x, cut_y = whole_batches((x, y), 28, 7, "fit train")
    assert len(cut_x) == 238 and len(cut_y["age"]) == 238 and (238 % 28) % 7 == 0
    assert "2 of 240 faces left out" in capsys.readouterr().out
    assert whole_batches((x, y), 28, 1, "fit train")[0] is x  # one device: as it is
    assert whole_batches((x, y), 24, 7, "fit train")[0] is x  # 240 = 10 x 24: no partial batch


def test_a_two_column_teacher_array_stops_train_a_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "teacher").mkdir(parents=True)
    np.save(tmp_path / "data" / "teacher" / "age.npy", np.full((3, 2), 30.0, "float32"))
    np.save(tmp_path / "data" / "teacher" / "gender.npy", np.full(3, 0.5, "float32"))
    with pytest.raises(UserError) as error:
        load_teacher(3)
    one_line(error, "age.npy", "shape (3, 2), not one value per training face (3,)")


@pytest.mark.parametrize(
    "value, message",
    [
        ("-1", "must be >= 1: model A trains in one fit, got -1"),
        ("0", "must be >= 1: model A trains in one fit, got 0"),
    ],
)
def test_model_a_epochs_below_one_get_one_bound_whatever_the_value(tmp_path, value, message):
    """-1 once said 'must be >= 0' and then 0 was refused with '>= 1'."""
    with pytest.raises(ParamsError) as error:
        write_params(tmp_path, [f"model_a.fit.epochs={value}"])
    one_line(error, "model_a.fit.epochs", message)


def test_model_b_phase_epochs_may_be_0_but_not_negative(tmp_path):
    with pytest.raises(ParamsError) as error:
        write_params(tmp_path, ["model_b.phase1.epochs=-1"])
    one_line(error, "model_b.phase1.epochs", "must be >= 0, got -1")


def test_val_scores_after_training_cut_the_last_batch_for_the_devices(monkeypatch):
    """Training cut val for the devices, the scores after it did not: 1,000 faces in batches
    of 256 over 7 devices (jax) ended in IndivisibleError after the last epoch."""
    from collections import defaultdict
    from types import SimpleNamespace

    from agegender.params import Loader
    from agegender.training import loop

    seen = []

    class Model:
        def evaluate(self, x, y, batch_size, verbose, return_dict):
            seen.append(len(x))
            return defaultdict(lambda: 0.5)

    monkeypatch.setattr(loop, "targets", lambda model, split: {"age": split.age[:, None]})
    val = SimpleNamespace(images=np.zeros((1000, 4, 4, 3), "uint8"), age=np.zeros(1000))
    trainer = SimpleNamespace(val=val, model=Model(), loader=Loader("arrays", 1))
    for devices, kept in ((7, 999), (1, 1000)):
        trainer.devices = lambda devices=devices: devices
        loop.Trainer.evaluate(trainer, 256)
        assert seen[-1] == kept and (kept % 256) % devices == 0
