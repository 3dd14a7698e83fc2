"""Face detection as `agegender-predict` runs it by default: recall, false faces, images/s.

    python benchmarks/detect_faces.py [--archive ../shared/datasets/UTKFace.tar.gz] [--n 1000]
                                      [--scenes 200] [--model B]

- recall on crops: the share of UTKFace crops (every one is a face) in which a face is found;
- recall on photos: UTKFace faces pasted at 40-200 px into photos of 640-4,000 px (one face,
  or groups of 2-6 side by side), on scikit-image backgrounds with no face; a face counts as
  found when a box's centre falls inside it. By face size, and the photos' images/s;
- the astronaut photo pasted into 768-2,048 px canvases, in grey, and rotated;
- false faces: faces found on scikit-image's sample photos that hold no face (a coffee cup,
  a cat, a rocket, coins, text, textures...), as they are and enlarged to 2,000 px;
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
from agegender.serve.faces import detect, detections
from agegender.serve.predict import predict_files

NO_FACE_SAMPLES = (  # skimage.data photos of things, none with a face ("camera", the
    # cameraman, has one: the pyramid finds it)
    "coffee", "chelsea", "rocket", "coins", "moon", "page", "horse", "text",
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


FACE_SIZES = (40, 48, 64, 96, 128, 200)
FACE_SCORES = (0.0, 0.7, 0.75, 0.8, 0.85, 0.9)  # --min-face-score thresholds to compare
CANVASES = (640, 1280, 2560, 4000)


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    import skimage.data

    name = NO_FACE_SAMPLES[rng.integers(len(NO_FACE_SAMPLES))]
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((width, height))


def scenes(jpegs: list[bytes], n: int, seed: int = 0):
    """n photos (image, [(x, y, side) of each pasted face]): one face at a random size and
    place, or a group of 2-6 in a row."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        side = int(rng.choice(CANVASES))
        width, height = side, side * 3 // 4
        image = background(rng, width, height)
        count = 1 if i % 2 == 0 else int(rng.integers(2, 7))
        size = int(rng.choice(FACE_SIZES))
        size = min(size, width // count - 4)
        places = []
        x0 = int(rng.integers(0, width - count * (size + 4) + 1))
        y = int(rng.integers(0, height - size + 1))
        for k in range(count):
            face = Image.open(io.BytesIO(jpegs[int(rng.integers(len(jpegs)))])).convert("RGB")
            x = x0 + k * (size + 4)
            image.paste(face.resize((size, size)), (x, y))
            places.append((x, y, size))
        yield image, places


def found(boxes: list[list[int]], place: tuple[int, int, int]) -> bool:
    x, y, side = place
    return any(
        x <= bx + bw / 2 <= x + side and y <= by + bh / 2 <= y + side for bx, by, bw, bh in boxes
    )


def photo_recall(jpegs: list[bytes], n: int) -> None:
    hits: dict[int, list[bool]] = {}
    start, extra = time.perf_counter(), 0
    for image, places in scenes(jpegs, n):
        boxes = detect(image)
        matched = [found(boxes, p) for p in places]
        extra += max(0, len(boxes) - sum(matched))
        for place, hit in zip(places, matched, strict=True):
            hits.setdefault(place[2], []).append(hit)
    seconds = time.perf_counter() - start
    rows = ", ".join(f"{s} px {np.mean(h):.1%} ({len(h)})" for s, h in sorted(hits.items()))
    big = [h for s, v in hits.items() if s >= 48 for h in v]
    print(f"recall on {n} photos by face size: {rows}")
    print(f"recall for faces >= 48 px: {np.mean(big):.1%}; boxes on no pasted face: {extra}")
    print(f"photos: {n / seconds:.1f} images/s (detection only, 640-4,000 px)")


def astronaut_cases() -> None:
    import skimage.data

    astronaut = Image.fromarray(skimage.data.astronaut())
    cases = {"original 512 px": astronaut, "grey": astronaut.convert("L").convert("RGB")}
    for side in (768, 1024, 2048):
        canvas = Image.new("RGB", (side, side), (200, 200, 200))
        canvas.paste(astronaut, (side // 3, side // 4))
        cases[f"in a {side} px canvas"] = canvas
    for angle in (90, 180, 270):
        cases[f"rotated {angle}"] = astronaut.rotate(angle, expand=True)
    print("astronaut: " + ", ".join(f"{k} {len(detect(v))}" for k, v in cases.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=Path("../shared/datasets/UTKFace.tar.gz"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--model", default="B")
    parser.add_argument("--scenes", type=int, default=200)
    args = parser.parse_args()
    import skimage.data

    jpegs = crops(args.archive, args.n)
    scored = [detections(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs]
    found = [len(d) for d in scored]
    print(f"recall on {len(jpegs)} UTKFace crops: {np.mean([f > 0 for f in found]):.2%}")
    print(f"crops with more than one face found: {sum(f > 1 for f in found)}")
    false, false_scores = {}, []
    for name in NO_FACE_SAMPLES:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        big = image.resize((2000, 2000 * image.height // image.width))
        for label, view in ((name, image), (f"{name} (2,000 px)", big)):
            boxes = detections(view)
            false[label] = len(boxes)
            false_scores += [d.score for d in boxes]
    hits = {k: v for k, v in false.items() if v}
    print(f"faces found on {len(false)} photos of no face: {sum(false.values())} {hits or ''}")
    best = [max((d.score for d in faces), default=-1.0) for faces in scored]  # -1: none
    for threshold in FACE_SCORES:  # what --min-face-score would keep and drop
        recall = np.mean(np.array(best) >= threshold)
        false_faces = sum(s >= threshold for s in false_scores)
        print(
            f"--min-face-score {threshold}: recall on crops {recall:.2%}, "
            f"faces on photos of no face {false_faces}"
        )
    photo_recall(jpegs, args.scenes)
    astronaut_cases()

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
