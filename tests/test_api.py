"""The Python API: `analyze` on a path, a PIL image or an array, the model loaded once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.errors import UserError
from agegender.serve import api
from tests.conftest import range_block
from tests.synthetic import draw_face


@pytest.fixture
def in_project(small_pipeline, monkeypatch):
    """The tiny pipeline's folder as the project whose models "A", "B" and "ensemble" are."""
    monkeypatch.setenv(api.HOME, str(small_pipeline))
    monkeypatch.setattr(api, "_loaded", {})
    return small_pipeline


def test_path_pil_image_and_array_give_the_same_record(in_toy, tmp_path):
    face = draw_face(30, 0, np.random.default_rng(0), side=96)
    face.save(tmp_path / "face.png")
    by_path = api.analyze(tmp_path / "face.png", detect_faces=False)  # a drawn face: a crop
    by_image = api.analyze(face, detect_faces=False)
    by_array = api.analyze(np.asarray(face), detect_faces=False)
    assert by_path == by_image == by_array
    (only,) = by_path
    assert set(only) == {"age", "age_low", "age_high", "gender", "gender_prob", "box"}
    assert only["box"] == [0, 0, 96, 96] and 0 <= only["gender_prob"] <= 1
    assert only["age_low"] <= only["age"] <= only["age_high"]  # the calibrated range
    assert only["gender"] == ("female" if only["gender_prob"] >= 0.5 else "male")


def test_each_model_is_loaded_once(in_toy, monkeypatch):
    """Once per process: the ensemble reuses B, loaded for the first call."""
    loads = []
    real = api.load_model
    monkeypatch.setattr(api, "load_model", lambda path: loads.append(path) or real(path))
    face = draw_face(40, 1, np.random.default_rng(1))
    for _ in range(3):
        api.analyze(face, detect_faces=False)
    api.analyze(face, model="ensemble", detect_faces=False)
    assert [p.rsplit("/", 1)[-1] for p in loads] == ["age_gender_B.keras", "age_gender_A.keras"]


def test_no_face_gives_no_record_and_bad_input_is_one_line(in_toy, tmp_path):
    gradient = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (200, 1))
    assert api.analyze(gradient) == []  # no face: no record, never a guess
    with pytest.raises(UserError, match="uint8"):
        api.analyze(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(UserError, match="not a list"):
        api.analyze([1, 2, 3])
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(UserError, match="bad.jpg: not an image"):
        api.analyze(tmp_path / "bad.jpg")


def test_a_missing_project_model_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv(api.HOME, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(api, "CHECKOUT", tmp_path / "checkout")
    with pytest.raises(UserError) as error:
        api.model_files("B")
    message = str(error.value)
    assert "models/age_gender_B.keras: no such model (looked in " in message
    assert str(tmp_path / "checkout" / "models" / "age_gender_B.keras") in message
    assert api.model_files("my.keras") == ["my.keras"]  # a path is taken as given


def test_predict_cli_finds_the_project_models_from_anywhere(in_project, tmp_path, monkeypatch):
    from agegender.serve import predict

    monkeypatch.chdir(tmp_path)  # not the project: found through AGEGENDER_HOME
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(tmp_path / "x.png")
    assert predict.cli([str(tmp_path / "x.png"), "--crops"]) == 0


def test_an_unknown_model_name_lists_the_valid_ones():
    from agegender.errors import UserError
    from agegender.serve.api import model_files

    with pytest.raises(UserError, match="give A, B, ensemble or a .keras or .tflite model file"):
        model_files("C")


def test_an_image_over_the_pixel_limit_is_refused_as_a_file_is(in_toy):
    """The files' rule (40 MP decoded) for arrays and PIL images too: one line, before any
    decoding or model work (an 8000x8000 array once took 37 s and 3.8 GB)."""
    huge = np.broadcast_to(np.uint8(0), (7000, 6000, 3))  # 42 MP, no memory of its own
    with pytest.raises(UserError, match=r"array given to analyze is too large: 6000x7000 pixels"):
        api.analyze(huge)
    with pytest.raises(UserError, match=r"image given to analyze is too large: 7000x6000"):
        api.analyze(Image.new("L", (7000, 6000)))


def test_a_closed_pil_image_is_one_line(in_toy, tmp_path):
    draw_face(30, 0, np.random.default_rng(0)).save(tmp_path / "face.jpg")
    image = Image.open(tmp_path / "face.jpg")
    image.close()
    with pytest.raises(UserError, match="cannot be read .Operation on closed image"):
        api.analyze(image)


def test_the_first_analyze_prints_no_tensorflow_start_up_lines(in_project):
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from agegender.api import analyze\n"
        "print(analyze(np.zeros((64, 64, 3), np.uint8), detect_faces=False)[0]['gender'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("male", "female")
    assert "cuda" not in done.stderr.lower() and "absl" not in done.stderr, done.stderr


# --- the toy project (conftest): two tiny models whose answers are known by hand ------------


@pytest.fixture
def in_toy(toy_project, monkeypatch):
    monkeypatch.setenv(api.HOME, str(toy_project))
    monkeypatch.setattr(api, "_loaded", {})
    monkeypatch.setattr(api, "_models", {})
    return toy_project


def grey(value: int, shape: tuple = (32, 32, 3)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def test_each_model_answers_with_its_own_range_and_the_ensemble_with_its_weights(in_toy):
    """By hand on a grey 30: A says 30 (29-31, male at 0.2); B, the default, 40 (38-42,
    female at 0.8); the ensemble 0.25 x 30 + 0.75 x 40 = 37.5 (34.5-40.5) and P = 0.5,
    which says female (and a temperature of 2 leaves 0.5 as it is)."""
    one = {"detect_faces": False}
    assert api.analyze(grey(30), "A", **one) == [
        {"age": 30.0, "age_low": 29.0, "age_high": 31.0, "gender": "male",
         "gender_prob": pytest.approx(0.2), "box": [0, 0, 32, 32]}
    ]  # fmt: skip
    (b,) = api.analyze(grey(30), **one)
    assert (b["age"], b["age_low"], b["age_high"], b["gender"]) == (40.0, 38.0, 42.0, "female")
    (both,) = api.analyze(grey(30), "ensemble", **one)
    assert (both["age"], both["age_low"], both["age_high"]) == (37.5, 34.5, 40.5)
    assert both["gender_prob"] == pytest.approx(0.5) and both["gender"] == "female"


def test_without_ensemble_json_the_models_weigh_the_same(in_toy, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(in_toy, tmp_path / "p")
    (tmp_path / "p" / "reports" / "eval" / "ensemble.json").unlink()
    monkeypatch.setenv(api.HOME, str(tmp_path / "p"))
    (both,) = api.analyze(grey(30), "ensemble", detect_faces=False)
    assert both["age"] == 35.0


def test_a_model_file_answers_raw_and_a_user_calibration_names_its_model(in_toy, tmp_path):
    """A model given as a file has no range; a calibration file is for the model it names,
    used when none is asked for, refused for another."""
    import json

    a_file = str(in_toy / "models" / "age_gender_A.keras")
    (raw,) = api.analyze(grey(30), a_file, detect_faces=False)
    assert raw["age"] == 30.0 and "age_low" not in raw
    mine = tmp_path / "mine.json"
    mine.write_text(
        json.dumps({"version": 1, "model": "A", "models": {"user": range_block(5, 1.0)}})
    )
    (own,) = api.analyze(grey(30), calibration=mine, detect_faces=False)
    assert (own["age"], own["age_low"], own["age_high"]) == (30.0, 25.0, 35.0)
    assert api.analyze(grey(30), "A", calibration=mine, detect_faces=False) == [own]
    with pytest.raises(UserError, match=r"mine.json: fitted for model A, not B"):
        api.analyze(grey(30), "B", calibration=mine, detect_faces=False)


def test_every_array_layout_is_read_as_the_models_see_it(in_toy):
    """Grey (H, W) and (H, W, 1) arrays are the grey image; a 4th channel is alpha:
    fully transparent pixels are white (255). Anything else is one line naming it."""

    def age(array: np.ndarray) -> float:
        return api.analyze(array, "A", detect_faces=False)[0]["age"]

    assert age(grey(30, (16, 24))) == age(grey(30, (16, 24, 1))) == 30.0
    transparent = np.dstack([grey(30, (16, 16, 3)), grey(0, (16, 16))])
    assert age(transparent) == 255.0
    for bad, said in ((grey(30, (8, 8, 2)), "uint8 \\(H, W\\)"),
                      (grey(30, (2, 8, 8, 3)), "got uint8 \\(2, 8, 8, 3\\)"),
                      (grey(30, (0, 8, 3)), "an empty image array \\(0, 8, 3\\)")):  # fmt: skip
        with pytest.raises(UserError, match=said):
            age(bad)
    with pytest.raises(UserError, match="an empty image \\(0x5 pixels\\): nothing to analyze"):
        api.analyze(Image.new("RGB", (0, 5)), "A", detect_faces=False)


def test_no_face_is_no_record_and_a_bad_file_names_itself(in_toy, tmp_path):
    assert api.analyze(grey(30, (64, 64, 3)), "A") == []  # a grey square holds no face
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(UserError, match=r"bad.png: not an image"):
        api.analyze(tmp_path / "bad.png", "A")


def test_the_checkout_fallback_is_this_checkout():
    """Where `pip install -e .` was run: the folder holding dvc.yaml (one folder off, the
    installed command found no models from outside the repository)."""
    assert Path(__file__).resolve().parents[1] == api.CHECKOUT


def test_a_one_pixel_wide_image_is_analyzed(in_toy):
    (one,) = api.analyze(Image.new("RGB", (1, 5), (40, 40, 40)), "A", detect_faces=False)
    assert one["age"] == 40.0 and one["box"] == [0, 0, 1, 5]


def test_every_face_the_detector_finds_is_kept_by_default(in_toy):
    skimage_data = pytest.importorskip("skimage.data")
    (face,) = api.analyze(skimage_data.astronaut(), "A")
    assert 0 < face["face_score"] < 1 and len(face["box"]) == 4
