"""Face detection in ordinary photos: small faces in large photos, groups, turned images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agegender.serve.faces import (
    MIN_SCORE,
    NO_FACE,
    TILE_SCORE,
    crops,
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
