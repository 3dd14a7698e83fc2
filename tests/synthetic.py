"""A small synthetic UTKFace-style archive whose labels are visible in the pixels.

Age sets the face's size and shade, gender draws a band across the forehead, so a model
that learns anything beats chance. The archive also holds the real archive's quirks:
byte-identical duplicates, conflicting copies, malformed names and unreadable files.

    python -m tests.synthetic OUT.tar.gz [--faces N] [--seed S]
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIDE = 96  # drawn size; prepare resizes to data.image_size


def draw_face(age: int, gender: int, rng: np.random.Generator, side: int = SIDE) -> Image.Image:
    noise = rng.integers(60, 120, (side, side, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    radius = side * (0.18 + 0.3 * age / 100)  # older: bigger
    shade = int(70 + 1.7 * age)  # older: lighter
    cx = side / 2 + rng.uniform(-2, 2)
    cy = side / 2 + rng.uniform(-2, 2)
    draw.ellipse(
        [cx - radius, cy - radius * 1.2, cx + radius, cy + radius * 1.2], fill=(shade,) * 3
    )
    if gender == 1:  # a coloured band, symmetric so a horizontal flip keeps it
        draw.rectangle([0, int(side * 0.06), side, int(side * 0.2)], fill=(40, 40, 220))
    return image


def jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "JPEG"), quality=92, **kwargs)
    return buffer.getvalue()


def faces(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """n well-formed faces plus the quirks; returns (file name, bytes) pairs."""
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        age = int(rng.integers(1, 91))
        gender = int(rng.integers(0, 2))
        race = int(rng.integers(0, 5))
        stamp = 20170101000000000 + i
        files.append(
            (f"{age}_{gender}_{race}_{stamp}.jpg.chip.jpg", jpeg(draw_face(age, gender, rng)))
        )
    quirks_rng = np.random.default_rng(seed + 1)
    # Byte-identical copies: two agreeing (duplicate), two disagreeing (conflict).
    name0, data0 = files[0]
    files.append((name0.replace("2017", "2016", 1), data0))
    name1, data1 = files[1]
    age1, gender1 = int(name1.split("_")[0]), int(name1.split("_")[1])
    files.append((f"{age1 + 7}_{gender1}_0_20160101000000001.jpg.chip.jpg", data1))
    # The real archive's malformed-name shapes, labels still recoverable.
    odd = draw_face(30, 1, quirks_rng)
    files += [
        ("39_1_20170116174525125.jpg.chip.jpg", jpeg(odd)),  # no race field
        ("14_0_0_2017011022340900.jpg.chip.jpg", jpeg(draw_face(14, 0, quirks_rng))),  # 16 digits
        ("24_0_1_20170116220224657 .jpg.chip.jpg", jpeg(draw_face(24, 0, quirks_rng))),  # space
        ("55_0_0_20170116232725357jpg.chip.jpg", jpeg(draw_face(55, 0, quirks_rng))),  # no dot
    ]
    # Unusable: labels out of range or absent, and files that are not images.
    files += [
        ("130_0_0_20170101000000000.jpg.chip.jpg", jpeg(draw_face(90, 0, quirks_rng))),
        ("25_3_0_20170101000000000.jpg.chip.jpg", jpeg(draw_face(25, 0, quirks_rng))),
        ("face.jpg", jpeg(draw_face(20, 0, quirks_rng))),
        ("33_1_0_20170101000000099.jpg.chip.jpg", b""),
        ("34_1_0_20170101000000098.jpg.chip.jpg", jpeg(draw_face(34, 1, quirks_rng))[:300]),
        ("35_0_0_20170101000000097.jpg.chip.jpg", b"this is not a JPEG"),
    ]
    # Odd but readable formats: grayscale, CMYK, PNG with alpha, non-square.
    files += [
        ("40_0_1_20170101000000096.jpg.chip.jpg", jpeg(draw_face(40, 0, quirks_rng).convert("L"))),
        (
            "41_1_2_20170101000000095.jpg.chip.jpg",
            jpeg(draw_face(41, 1, quirks_rng).convert("CMYK")),
        ),
        (
            "42_0_3_20170101000000094.jpg.chip.jpg",
            jpeg(draw_face(42, 0, quirks_rng).convert("RGBA"), format="PNG"),
        ),
        (
            "43_1_4_20170101000000093.jpg.chip.jpg",
            jpeg(draw_face(43, 1, quirks_rng).resize((120, 80))),
        ),
    ]
    return files


QUIRKS = {  # what prepare must make of the extra files above
    "duplicate": 1,
    "conflict": 2,
    "malformed": 3,
    "unreadable": 3,
    "malformed_names": 4 + 3,  # 4 recoverable shapes + 3 unusable names
}


def write_archive(path: Path, n: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in faces(n, seed):
            info = tarfile.TarInfo(f"UTKFace/{name}")
            info.size = len(data)
            info.mtime = 1_500_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="write a synthetic UTKFace-style archive")
    parser.add_argument("out", type=Path)
    parser.add_argument("--faces", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_archive(args.out, args.faces, args.seed)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
