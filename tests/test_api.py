"""The Python API: `analyze` on a path, a PIL image or an array, the model loaded once."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agegender.errors import UserError
from agegender.serve import api
from tests.synthetic import draw_face


@pytest.fixture
def in_project(small_pipeline, monkeypatch):
    """The tiny pipeline's folder as the project whose models "A", "B" and "ensemble" are."""
    monkeypatch.setenv(api.HOME, str(small_pipeline))
    monkeypatch.setattr(api, "_loaded", {})
    return small_pipeline


def test_path_pil_image_and_array_give_the_same_record(in_project, tmp_path):
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


def test_the_model_is_loaded_once(in_project, monkeypatch):
    loads = []
    real = api.load_model
    monkeypatch.setattr(api, "load_model", lambda path: loads.append(path) or real(path))
    face = draw_face(40, 1, np.random.default_rng(1))
    for _ in range(3):
        api.analyze(face, detect_faces=False)
    api.analyze(face, model="ensemble", detect_faces=False)
    assert [p.rsplit("/", 1)[-1] for p in loads] == [
        "age_gender_B.keras",
        "age_gender_A.keras",
        "age_gender_B.keras",
    ]


def test_no_face_gives_no_record_and_bad_input_is_one_line(in_project, tmp_path):
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


def test_an_image_over_the_pixel_limit_is_refused_as_a_file_is(in_project):
    """The files' rule (40 MP decoded) for arrays and PIL images too: one line, before any
    decoding or model work (an 8000x8000 array once took 37 s and 3.8 GB)."""
    huge = np.broadcast_to(np.uint8(0), (7000, 6000, 3))  # 42 MP, no memory of its own
    with pytest.raises(UserError, match=r"array given to analyze is too large: 6000x7000 pixels"):
        api.analyze(huge)
    with pytest.raises(UserError, match=r"image given to analyze is too large: 7000x6000"):
        api.analyze(Image.new("L", (7000, 6000)))


def test_a_closed_pil_image_is_one_line(in_project, tmp_path):
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
