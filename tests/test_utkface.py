import io
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from agegender.errors import UserError
from agegender.images import decode
from agegender.labels import UNKNOWN_RACE, age_bucket, parse_name
from agegender.prepare.archive import read_source
from tests.synthetic import draw_face, jpeg


def test_canonical_name():
    labels = parse_name("26_1_3_20170119180102377.jpg.chip.jpg")
    assert (labels.age, labels.gender, labels.race, labels.problem, labels.usable) == (
        26,
        1,
        3,
        "",
        True,
    )


@pytest.mark.parametrize(
    ("name", "age", "gender", "race", "problem"),
    [  # the 8 malformed names of the real archive, one row per shape
        ("14_0_0_2017011022340900.jpg.chip.jpg", 14, 0, 0, "16-digit timestamp"),
        ("24_0_1_20170116220224657 .jpg.chip.jpg", 24, 0, 1, "space before .jpg"),
        ("28_1_2_201701161846515488.jpg.chip.jpg", 28, 1, 2, "18-digit timestamp"),
        ("38_0_1_201701162330572788.jpg.chip.jpg", 38, 0, 1, "18-digit timestamp"),
        ("39_1_20170116174525125.jpg.chip.jpg", 39, 1, UNKNOWN_RACE, "no race field"),
        ("55_0_0_20170116232725357jpg.chip.jpg", 55, 0, 0, "missing dot before jpg"),
        ("61_1_20170109142408075.jpg.chip.jpg", 61, 1, UNKNOWN_RACE, "no race field"),
        ("61_1_20170109150557335.jpg.chip.jpg", 61, 1, UNKNOWN_RACE, "no race field"),
    ],
)
def test_real_malformed_names_are_recovered(name, age, gender, race, problem):
    labels = parse_name(name)
    assert (labels.age, labels.gender, labels.race) == (age, gender, race)
    assert labels.problem == problem
    assert labels.usable


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("130_0_0_20170101000000000.jpg.chip.jpg", "age 130 outside 0-120"),
        ("25_2_0_20170101000000000.jpg.chip.jpg", "gender 2 not 0/1"),
        ("face.jpg", "does not start with"),
        ("readme.txt", "does not start with"),
    ],
)
def test_unusable_names(name, problem):
    labels = parse_name(name)
    assert not labels.usable
    assert problem in labels.problem


def test_age_buckets():
    assert age_bucket(np.array([0, 9, 10, 69, 70, 116])).tolist() == [0, 0, 1, 6, 7, 7]


def _tar_with(path, member: tarfile.TarInfo, data: bytes = b""):
    with tarfile.open(path, "w") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink", "device"])
def test_tar_refuses_unsafe_members(tmp_path, kind):
    member = tarfile.TarInfo("UTKFace/1_0_0_20170101000000000.jpg.chip.jpg")
    data = b"x"
    if kind == "absolute":
        member.name = "/etc/1_0_0_20170101000000000.jpg.chip.jpg"
    elif kind == "dotdot":
        member.name = "UTKFace/../../1_0_0_20170101000000000.jpg.chip.jpg"
    elif kind == "symlink":
        member.type, member.linkname, data = tarfile.SYMTYPE, "/etc/passwd", b""
    elif kind == "hardlink":
        member.type, member.linkname, data = tarfile.LNKTYPE, "/etc/passwd", b""
    else:
        member.type, data = tarfile.CHRTYPE, b""
    member.size = len(data)
    archive = _tar_with(tmp_path / "bad.tar", member, data)
    with pytest.raises(UserError, match="refusing member"):
        list(read_source(archive))


def test_zip_refuses_path_traversal(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../1_0_0_20170101000000000.jpg.chip.jpg", b"x")
    with pytest.raises(UserError, match="refusing member"):
        list(read_source(archive))


def test_sources_agree_and_skip_hidden_files(tmp_path):
    files = {
        "1_0_0_20170101000000000.jpg.chip.jpg": b"a",
        "2_1_0_20170101000000001.jpg.chip.jpg": b"b",
    }
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / ".DS_Store").write_bytes(b"junk")
    with zipfile.ZipFile(tmp_path / "u.zip", "w") as zf:
        for name, data in files.items():
            zf.writestr(f"UTKFace/{name}", data)
        zf.writestr("__MACOSX/UTKFace/._x.jpg", b"junk")
    with tarfile.open(tmp_path / "u.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="UTKFace")
    for source in (folder, tmp_path / "u.zip", tmp_path / "u.tar.gz"):
        assert sorted((m.name, m.data) for m in read_source(source)) == sorted(files.items())


def test_missing_source_says_where_to_put_the_download(tmp_path):
    with pytest.raises(UserError, match="data/raw/UTKFace.tar.gz"):
        list(read_source(tmp_path / "nothing.tar.gz"))


def test_decode_odd_images():
    rng = np.random.default_rng(0)
    face = draw_face(30, 1, rng)
    for image, fmt in [
        (face.convert("L"), "JPEG"),
        (face.convert("CMYK"), "JPEG"),
        (face.convert("RGBA"), "PNG"),
        (face.resize((120, 60)), "JPEG"),
        (face.resize((4000, 3000)), "JPEG"),
    ]:
        pixels = decode(jpeg(image, format=fmt), 64)
        assert pixels is not None and pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8


def test_decode_rejects_corrupt_files():
    good = jpeg(draw_face(30, 1, np.random.default_rng(0)))
    assert decode(good, 32) is not None
    assert decode(b"", 32) is None
    assert decode(good[: len(good) // 3], 32) is None  # truncated
    assert decode(b"not an image at all", 32) is None


def test_grayscale_becomes_three_equal_channels():
    gray = Image.fromarray(np.full((50, 50), 128, np.uint8))
    pixels = decode(jpeg(gray), 32)
    assert pixels is not None
    assert np.all(pixels[..., 0] == pixels[..., 1]) and np.all(pixels[..., 1] == pixels[..., 2])


@pytest.mark.parametrize(
    ("array", "mode"),
    [
        (np.full((64, 64), 30000, np.uint16), None),  # the flat 16-bit face
        (np.linspace(0, 60000, 64 * 64).reshape(64, 64).astype(np.uint16), None),
        (np.linspace(-5e5, 2e6, 64 * 64).reshape(64, 64).astype(np.int32), None),
        (np.linspace(0.0, 1.0, 64 * 64).reshape(64, 64).astype(np.float32), "F"),
    ],
)
def test_deep_images_are_scaled_to_8_bits_not_clipped_white(tmp_path, array, mode):
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    path = tmp_path / ("deep.tif" if mode == "F" or array.dtype == np.int32 else "deep.png")
    image.save(path)
    pixels = decode(path.read_bytes(), 32)
    assert pixels is not None and pixels.dtype == np.uint8
    assert pixels.max() < 255 or pixels.min() < 200, "every pixel white"
    if np.ptp(array) > 0:  # a ramp keeps its range: dark on one side, bright on the other
        assert pixels.min() <= 10 and pixels.max() >= 245
    else:
        assert np.all(pixels == 128)
