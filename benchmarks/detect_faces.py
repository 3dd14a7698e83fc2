"""Face detection as `agegender-predict` runs it by default: recall, false faces, images/s.

    python benchmarks/detect_faces.py [--archive ../shared/datasets/UTKFace.tar.gz] [--n 1000]
                                      [--model B]

- recall: the share of UTKFace crops (every one is a face) in which a face is found;
- false faces: faces found on scikit-image's sample photos that hold no face (a coffee cup,
  a cat, a rocket, coins, text, textures...);
- images/s: the whole tool on the crops written as JPEG files (decode, detect, crop,
  predict with flip averaging), as `agegender-predict FOLDER` does.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from agegender.evaluate.inference import load_model
from agegender.serve.api import model_files
from agegender.serve.faces import detect
from agegender.serve.predict import predict_files

NO_FACE_SAMPLES = (  # skimage.data photos of things, none with a face
    "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "horse", "text",
    "clock", "hubble_deep_field", "immunohistochemistry", "logo", "brick", "grass", "gravel",
    "cell", "colorwheel", "retina", "shepp_logan_phantom",
)  # fmt: skip


def crops(archive: Path, n: int) -> list[bytes]:
    """n UTKFace JPEGs spread over the archive (every 20th file)."""
    out: list[bytes] = []
    with tarfile.open(archive) as tar:
        for i, member in enumerate(tar):
            if member.isfile() and member.name.endswith(".jpg") and i % 20 == 0:
                out.append(tar.extractfile(member).read())  # type: ignore[union-attr]
                if len(out) == n:
                    break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=Path("../shared/datasets/UTKFace.tar.gz"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--model", default="B")
    args = parser.parse_args()
    import skimage.data

    jpegs = crops(args.archive, args.n)
    found = [len(detect(Image.open(io.BytesIO(j)).convert("RGB"))) for j in jpegs]
    print(f"recall on {len(jpegs)} UTKFace crops: {np.mean([f > 0 for f in found]):.2%}")
    print(f"crops with more than one face found: {sum(f > 1 for f in found)}")
    false = {}
    for name in NO_FACE_SAMPLES:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        false[name] = len(detect(image))
    hits = {k: v for k, v in false.items() if v}
    print(f"faces found on {len(false)} photos of no face: {sum(false.values())} {hits or ''}")

    models = [load_model(path) for path in model_files(args.model)]
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, data in enumerate(jpegs):
            path = Path(folder) / f"{i:05d}.jpg"
            path.write_bytes(data)
            paths.append(str(path))
        list(predict_files(paths[:64], models, faces=True))  # warm-up: tracing, threads
        start = time.perf_counter()
        records = list(predict_files(paths, models, faces=True))
        seconds = time.perf_counter() - start
    predicted = sum("age" in r for r in records)
    print(
        f"end to end with model {args.model}: {len(paths) / seconds:.1f} images/s "
        f"({predicted} faces predicted in {seconds:.1f} s, flip-averaged)"
    )


if __name__ == "__main__":
    main()
