"""Face detection in ordinary photos: small faces in large photos, groups, turned images."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from agegender.serve.faces import (
    MIN_SCORE,
    NO_FACE,
    TILE_SCORE,
    crops,
    decode,
    detect,
    detections,
    read,
    unturned,
)

skimage_data = pytest.importorskip("skimage.data")
ASTRONAUT = Image.fromarray(skimage_data.astronaut())  # her face: about x 160-230, y 70-160


def centre_in(box, region) -> bool:
    x, y, w, h = box
    left, top, right, bottom = region
    return left <= x + w / 2 <= right and top <= y + h / 2 <= bottom


@pytest.mark.parametrize("side", [768, 1024, 2048])
def test_a_face_pasted_into_a_larger_canvas_is_found_where_it_is(side):
    canvas = Image.new("RGB", (side, side), (200, 200, 200))
    at = (side // 3, side // 4)
    canvas.paste(ASTRONAUT, at)
    boxes = detect(canvas)
    assert len(boxes) == 1
    assert centre_in(boxes[0], (at[0] + 140, at[1] + 50, at[0] + 260, at[1] + 180))


def test_every_face_of_a_group_photo_is_found():
    face = ASTRONAUT.crop((120, 30, 270, 200)).resize((100, 113))
    group = Image.new("RGB", (1141, 400), (90, 110, 90))
    for x in (300, 700):
        group.paste(face, (x, 140))
    boxes = detect(group)
    assert len(boxes) == 2
    assert centre_in(boxes[0], (300, 140, 400, 253)) and centre_in(boxes[1], (700, 140, 800, 253))


def test_nothing_is_found_on_noise():
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    assert detect(Image.fromarray(noise)) == []


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_a_turned_photo_is_found_with_rotate_and_boxed_in_its_own_pixels(angle):
    turned = ASTRONAUT.rotate(angle, expand=True)
    faces = crops(turned, (64,), faces=True, rotate=True)
    assert faces[0].error is None and faces[0].box is not None
    # `turned` is the upright photo turned by `angle`: its box, taken back, is on her face
    upright = unturned(faces[0].box, angle, *ASTRONAUT.size)
    assert centre_in(upright, (130, 40, 260, 190))


def test_unturned_inverts_the_transposes():
    image = Image.new("RGB", (300, 200))
    box = [10, 20, 30, 40]
    for angle in (90, 180, 270):
        w, h = image.transpose({90: 2, 180: 3, 270: 4}[angle]).size
        back = unturned(unturned(box, angle, 300, 200), (360 - angle) % 360, w, h)
        assert back == box


def test_each_face_carries_the_detector_score_and_a_min_score_drops_it():
    faces = crops(ASTRONAUT, (64,), faces=True)
    assert len(faces) == 1 and faces[0].score is not None
    assert MIN_SCORE <= faces[0].score <= 1 and faces[0].pyramid_only is False
    kept = crops(ASTRONAUT, (64,), faces=True, min_score=faces[0].score)
    assert len(kept) == 1 and kept[0].error is None
    dropped = crops(ASTRONAUT, (64,), faces=True, min_score=min(1.0, faces[0].score + 1e-3))
    assert dropped[0].error == NO_FACE


def test_a_face_only_the_pyramid_sees_says_so():
    """A 60 px face in a 2,000 px photo is too small for the whole-image view."""
    face = ASTRONAUT.crop((120, 30, 270, 200)).resize((60, 68))
    photo = Image.new("RGB", (2000, 1500), (90, 110, 90))
    photo.paste(face, (900, 700))
    found = detections(photo)
    assert len(found) == 1 and found[0].pyramid_only and found[0].score >= TILE_SCORE


def test_a_reduced_jpeg_decode_reports_boxes_in_full_pixels_on_both_axes(tmp_path):
    """A 2000x1500 JPEG decoded at 1/8 is 250x188: the height's scale is not the width's.
    With --crops the box is the whole image; a face's box maps back inside the image."""
    path = tmp_path / "wide.jpg"
    canvas = Image.new("RGB", (2000, 1500), (200, 200, 200))
    canvas.paste(ASTRONAUT.resize((1024, 1024)), (500, 300))
    canvas.save(path, quality=90)
    (whole,) = read(str(path), (64,), faces=False)
    assert whole.box == [0, 0, 2000, 1500]
    (face,) = read(str(path), (64,), faces=True)
    x, y, w, h = face.box
    assert x >= 0 and y >= 0 and x + w <= 2000 and y + h <= 1500
    assert centre_in(face.box, (500 + 260, 300 + 100, 500 + 520, 300 + 360))


@pytest.mark.parametrize("alpha", [0, 255])
def test_transparency_hides_a_face_from_the_detector_as_from_the_model(tmp_path, alpha):
    """A fully transparent PNG shows a white square: no face, never a confident answer for a
    face only the detector saw; the same pixels opaque are a face."""
    pixels = np.dstack([np.asarray(ASTRONAUT), np.full(ASTRONAUT.size[::-1], alpha, np.uint8)])
    path = tmp_path / "face.png"
    Image.fromarray(pixels, "RGBA").save(path)
    faces = read(str(path), (64,), faces=True)
    if alpha == 0:
        assert [f.error for f in faces] == [NO_FACE]
    else:
        assert faces[0].error is None and len(faces) == 1
        assert faces[0].pixels[64].mean() < 200  # her face, not white


def test_a_transparent_area_is_white_for_the_crop_as_for_the_detector():
    pixels = np.dstack([np.asarray(ASTRONAUT), np.full(ASTRONAUT.size[::-1], 255, np.uint8)])
    pixels[:, 300:, 3] = 0  # the right part transparent: her face (x 160-230) stays
    faces = crops(Image.fromarray(pixels, "RGBA"), (64,), faces=False)
    square = faces[0].pixels[64]
    assert (square[:, 40:] == 255).all() and square[:, :30].mean() < 200


def test_a_48_megapixel_phone_photo_is_read_reduced_and_boxed_in_full_pixels(tmp_path):
    """Over the 40 MP decoding limit as a whole, but a JPEG decodes at 1/2 to 1/8 scale:
    the face is found and its box given in the photo's own pixels."""
    photo = Image.new("RGB", (8000, 6000), (200, 200, 200))
    photo.paste(ASTRONAUT.resize((2048, 2048)), (3000, 2000))  # 4 times: her face at x 3640-4100
    photo.save(tmp_path / "phone.jpg", quality=80)
    faces = read(str(tmp_path / "phone.jpg"), (64,), faces=True)
    assert faces[0].error is None and len(faces) == 1
    assert centre_in(faces[0].box, (3000 + 640, 2000 + 280, 3000 + 1100, 2000 + 700))
    assert 300 < faces[0].box[2] < 500  # about 4 times her box in the 512 px photo
    assert faces[0].image_size == (8000, 6000)
    upload = read(io.BytesIO((tmp_path / "phone.jpg").read_bytes()), (64,), faces=True)
    opened = decode(Image.open(tmp_path / "phone.jpg"), (64,), faces=True)  # analyze(PIL)
    assert [f.box for f in upload] == [f.box for f in opened] == [faces[0].box]


def test_a_png_over_the_limit_and_a_bomb_are_refused_in_one_line(tmp_path):
    Image.new("L", (7000, 6000)).save(tmp_path / "big.png")
    (face,) = read(str(tmp_path / "big.png"), (64,), faces=True)
    assert face.error.startswith("too large: 7000x6000 pixels, over the 40 MP limit")
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 MP, 50 MB as 1 bit
    (face,) = read(str(tmp_path / "bomb.png"), (64,), faces=True)
    assert face.error.startswith("too large: over 200 MP, refused as a possible decompression")


def test_large_images_are_decoded_one_at_a_time_whatever_the_threads(tmp_path, monkeypatch):
    """The decode budget (40 MP over all threads) bounds predict's memory however many
    --workers decode: four 25 MP images never overlap, small ones do."""
    from concurrent.futures import ThreadPoolExecutor

    from agegender.serve import faces as faces_module

    running, most = [0], [0]
    real = faces_module.crops

    def counting(*args, **kwargs):
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            time.sleep(0.2)  # long enough for the other threads to try to start
            return real(*args, **kwargs)
        finally:
            running[0] -= 1

    monkeypatch.setattr(faces_module, "crops", counting)
    for name, side in (("big", 5000), ("small", 300)):
        for i in range(4):
            Image.new("L", (side, side), 90).save(tmp_path / f"{name}{i}.png")
        with ThreadPoolExecutor(4) as pool:
            paths = [str(tmp_path / f"{name}{i}.png") for i in range(4)]
            done = list(pool.map(lambda p: read(p, (32,), faces=False), paths))
        assert all(found[0].error is None for found in done)
        assert most[0] == (1 if name == "big" else 4), name
        most[0] = 0
