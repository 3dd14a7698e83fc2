"""How much one face's answer moves when the same photo is saved or framed a little
differently: JPEG quality 95 and 75, a 0.6x resize, a rotation of +-10 degrees.

    python benchmarks/stability.py [--n 500] [--model B]

For N test-split faces (never trained on), each variant is predicted as a crop
(`agegender-predict --crops`, flip-averaged), and compared with the face as UTKFace ships
it: the mean absolute change of age, how often the gender flips, and how often the new
age leaves the original's 80 % range. The age range (age_low, age_high) is meant to
absorb such changes.
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from agegender.layout import PREPARED
from agegender.serve.api import Analyzer

VARIANTS = {
    "JPEG 95": lambda im: Image.open(io.BytesIO(_jpeg(im, 95))),
    "JPEG 75": lambda im: Image.open(io.BytesIO(_jpeg(im, 75))),
    "resized 0.6x": lambda im: im.resize((round(im.width * 0.6), round(im.height * 0.6))),
    "rotated +10": lambda im: im.rotate(10, resample=Image.Resampling.BILINEAR),
    "rotated -10": lambda im: im.rotate(-10, resample=Image.Resampling.BILINEAR),
}


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_faces(archive: Path, n: int) -> list[Image.Image]:
    """n faces of the prepared test split, decoded from the archive as they were shipped."""
    wanted = set(np.load(PREPARED / "test" / "name.npy")[:n].tolist())
    faces = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and Path(member.name).name in wanted:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                faces.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=Path("data/raw/UTKFace.tar.gz"))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--model", default="B")
    args = parser.parse_args()
    analyzer = Analyzer(args.model, detect_faces=False)
    faces = test_faces(args.archive, args.n)
    base = [analyzer(face)[0] for face in faces]
    print(f"{len(faces)} test faces, model {args.model}, as crops, flip-averaged")
    print(f"{'variant':<14} {'mean |age change|':>18} {'gender flips':>13} {'leaves range':>13}")
    for name, change in VARIANTS.items():
        after = [analyzer(change(face))[0] for face in faces]
        moved = np.array([abs(a["age"] - b["age"]) for a, b in zip(after, base, strict=True)])
        flips = np.mean([a["gender"] != b["gender"] for a, b in zip(after, base, strict=True)])
        outside = np.mean(
            [
                not b["age_low"] <= a["age"] <= b["age_high"]
                for a, b in zip(after, base, strict=True)
            ]
        )
        print(f"{name:<14} {moved.mean():>14.2f} yrs {flips:>13.1%} {outside:>13.1%}")


if __name__ == "__main__":
    main()
