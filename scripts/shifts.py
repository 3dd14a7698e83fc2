"""Where the numbers hold: the models and their calibration (fitted on UTKFace val) measured
on faces that are not like UTKFace's test split. Writes reports/shifts.json, which the report's
"Beyond the test split" section reads.

    python scripts/shifts.py                 # after `dvc repro`; ../shared's AAF when there
    python scripts/shifts.py --aaf PATH      # another copy of AAF-train-2000.tar.gz

Shifts built from UTKFace's test faces (never seen by any stage):
- each race group, with the range refitted on val *without* that group (a population the
  calibration never saw);
- JPEG quality 30, a Gaussian blur (radius 1.5 px), small faces (32 px scaled back up), on
  a seeded sample of 2,000 test faces;
- 1,000 of those pasted into a 3x larger photo and found by the detector.
And AAF-train-2000 (2,000 faces of another collection, mostly East Asian) through the
detector, as a user's photos would go. Predictions are cached under data/shifts/ (ignored by
git), so a second run only scores.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agegender import params as P  # noqa: E402
from agegender.data import load_split  # noqa: E402
from agegender.evaluate import calibration as C  # noqa: E402
from agegender.evaluate.ensemble import combine, read_weights  # noqa: E402
from agegender.evaluate.metrics import gender_scores  # noqa: E402
from agegender.labels import RACES  # noqa: E402
from agegender.layout import CALIBRATION, ENSEMBLE_WEIGHTS, MODELS, TRAINED, prediction_file  # noqa: E402
from agegender.report.inputs import model_md5s  # noqa: E402
from agegender.shift.scores import age_rows  # noqa: E402

AAF = ROOT.parent / "shared" / "datasets" / "AAF-train-2000.tar.gz"
CACHE = ROOT / "data" / "shifts"
OUT = ROOT / "reports" / "shifts.json"
BUILT_FACES = 2000  # the first test faces degraded for each built shift (model B: ~40 faces/s)
PHOTOS = 1000  # test faces pasted into photos (detection costs about 0.1 s a photo)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def blur(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(1.5)))


def small(image: np.ndarray) -> np.ndarray:
    side = image.shape[0]
    down = Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR)
    return np.asarray(down.resize((side, side), Image.Resampling.BILINEAR))


BUILT = {"jpeg_30": lambda x: jpeg(x, 30), "blur": blur, "small_faces": small}


def model_preds(images: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """{model key: (N, 2) flip-averaged age and P(female)} for A, B and the ensemble,
    cached by shift name."""
    from agegender.evaluate.inference import load, predict

    cache = CACHE / f"{name}.npz"
    if cache.exists():
        return dict(np.load(cache))
    out = {}
    for key, info in TRAINED.items():
        model = load(str(ROOT / info.file))
        both = predict(model, images, 256)
        out[key], out[f"{key}_plain"] = both[True], both[False]
        print(f"shifts: {name}: {info.name} on {len(images)} faces", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def with_ensemble(preds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The models' flip-averaged and plain predictions, and the ensemble's of both."""
    weights = read_weights(ROOT / ENSEMBLE_WEIGHTS, list(TRAINED))
    return {
        **preds,
        "ensemble": combine({k: preds[k] for k in TRAINED}, weights),
        "ensemble_plain": combine({k: preds[f"{k}_plain"] for k in TRAINED}, weights),
    }


# The adaptive range tried against evaluate's (a range that widens where the model is
# unsure): normalized split conformal, |true - predicted| / (floor + d) on val, where d is
# how far the face's prediction moves when it is mirrored (flip disagreement, free with flip
# averaging) and the floor is d's median on val.


def difficulty(pred: np.ndarray, plain: np.ndarray) -> np.ndarray:
    return 2 * np.abs(pred[:, 0].astype("float64") - plain[:, 0])  # |f(x) - f(mirror x)|


def fit_adaptive(pred, plain, age, level) -> dict:
    d = difficulty(pred, plain)
    floor = float(np.median(d)) or 1.0
    q = C.upper_quantile(np.abs(age - pred[:, 0]) / (floor + d), level)
    return {"floor": floor, "q": q}


def adaptive(age, pred, plain, fitted) -> dict:
    half = fitted["q"] * (fitted["floor"] + difficulty(pred, plain))
    low, high = np.clip(pred[:, 0] - half, 0, 120), np.clip(pred[:, 0] + half, 0, 120)
    return {
        "coverage": round(float(np.mean((age >= low) & (age <= high))), 4),
        "mean_width": round(float(np.mean(high - low)), 2),
    }


def measured(age, gender, pred, block) -> dict:
    """agegender-evaluate's age scores (coverage and width of the range, MAE, mean signed
    error...) and the gender accuracy, for one model's calibrated predictions."""
    fitted = C.apply(block, pred[:, 0], pred[:, 1])
    return {
        **age_rows(age.astype("float64"), fitted["age"], fitted["age_low"], fitted["age_high"]),
        "gender_accuracy": gender_scores(gender, pred[:, 1])["gender_accuracy"],
    }


def photos(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each face pasted at a random place into a 3x larger noisy photo, found by the
    detector and cropped as agegender-predict crops: (crops at the models' side, found)."""
    from agegender.serve.faces import crops

    rng = np.random.default_rng(seed)
    side = images.shape[1]
    out, found = [], []
    for image in images:
        canvas = rng.integers(40, 200, (3 * side, 3 * side, 3), dtype=np.uint8)
        canvas = np.array(Image.fromarray(canvas).filter(ImageFilter.GaussianBlur(4)))
        x, y = rng.integers(0, 2 * side, 2)
        canvas[y : y + side, x : x + side] = image
        faces = [f for f in crops(Image.fromarray(canvas), (side,), True) if f.error is None]
        found.append(bool(faces))
        if faces:
            best = max(faces, key=lambda f: f.score or 0)
            out.append(best.pixels[side])
    return np.stack(out), np.array(found)


def aaf_faces(path: Path, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """AAF-train-2000's faces through the detector: (crops, found, age, gender)."""
    from agegender.serve.faces import crops

    with tarfile.open(path) as tar:
        members = {m.name.split("/")[-1]: m for m in tar.getmembers() if m.isfile()}
        rows = [
            line.split(",")
            for line in tar.extractfile(members["labels.csv"]).read().decode().split()[1:]
        ]
        out, found = [], []
        for name, _, _ in rows:
            image = Image.open(io.BytesIO(tar.extractfile(members[name]).read())).convert("RGB")
            faces = [f for f in crops(image, (side,), True) if f.error is None]
            found.append(bool(faces))
            if faces:
                out.append(max(faces, key=lambda f: f.score or 0).pixels[side])
    age = np.array([float(r[1]) for r in rows])
    gender = np.array([1 if r[2] == "female" else 0 for r in rows])
    return np.stack(out), np.array(found), age, gender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aaf", type=Path, default=AAF, help="AAF-train-2000.tar.gz")
    args = parser.parse_args()
    import os

    os.chdir(ROOT)
    blocks = {k: C.read(ROOT / CALIBRATION, k) for k in MODELS}
    level = json.loads((ROOT / CALIBRATION).read_text())["level"]
    seed = P.load().seed  # evaluate's: the refitted ranges split val as it does
    val, test = load_split("val"), load_split("test")
    split_preds = {
        name: with_ensemble(
            {
                **{k: np.load(prediction_file(name, True, k)) for k in TRAINED},
                **{f"{k}_plain": np.load(prediction_file(name, False, k)) for k in TRAINED},
            }
        )
        for name in ("val", "test")
    }
    shifts: dict[str, dict] = {}

    val_adaptive = {
        m: fit_adaptive(split_preds["val"][m], split_preds["val"][f"{m}_plain"], val.age, level)
        for m in MODELS
    }

    def add(name: str, note: str, age, gender, preds, blocks_used=None, fitted=None) -> None:
        used, fitted = blocks_used or blocks, fitted or val_adaptive
        shifts[name] = {
            "note": note,
            "models": {m: measured(age, gender, preds[m], used[m]) for m in MODELS},
            "adaptive": {
                m: adaptive(age, preds[m], preds[f"{m}_plain"], fitted[m]) for m in MODELS
            },
        }
        print(f"shifts: {name}: B {shifts[name]['models']['model_b']}", flush=True)

    add("utkface_test", "UTKFace's test split as it is", test.age, test.gender, split_preds["test"])
    for r, race in enumerate(RACES):
        held = val.race != r
        refit = {
            m: {
                **blocks[m],
                "age_range": C.choose_ranges(
                    split_preds["val"][m][held, 0].astype("float64"),
                    val.age[held].astype("float64"), level, seed,
                ),
            }
            for m in MODELS
        }  # fmt: skip
        refit_adaptive = {
            m: fit_adaptive(
                split_preds["val"][m][held], split_preds["val"][f"{m}_plain"][held],
                val.age[held], level,
            )
            for m in MODELS
        }  # fmt: skip
        mine = test.race == r
        preds = {m: p[mine] for m, p in split_preds["test"].items()}
        note = f"UTKFace test faces of race {race}; range refitted on val without them"
        add(f"race_{race.lower()}", note, test.age[mine], test.gender[mine], preds, refit,
            refit_adaptive)  # fmt: skip
    # a seeded sample: the split is stored in name order, so its first faces are the ages
    # whose digits sort first (1, 10-19, 100...)
    sample = np.sort(np.random.default_rng(seed).permutation(len(test))[:BUILT_FACES])
    images, age, gender = np.asarray(test.images)[sample], test.age[sample], test.gender[sample]
    for name, change in BUILT.items():
        changed = np.stack([change(x) for x in images])
        note = f"{len(images)} UTKFace test faces (seeded sample), {name.replace('_', ' ')}"
        add(name, note, age, gender, with_ensemble(model_preds(changed, name)))
    every = slice(None, None, len(images) // PHOTOS)  # spread over the sample's ages
    if not (CACHE / "photos.npz").exists():
        built, found = photos(images[every])
        np.save(CACHE / "photos_found.npy", found)
        model_preds(built, "photos")
    found = np.load(CACHE / "photos_found.npy")
    rows = np.flatnonzero(found)
    age, gender = age[every], gender[every]
    note = (
        f"{len(found)} of those faces pasted into photos 3x their size, found by the "
        f"detector ({found.mean():.1%} found)"
    )
    add("photos", note, age[rows], gender[rows], with_ensemble(model_preds(None, "photos")))
    if args.aaf.is_file():
        if not (CACHE / "aaf.npz").exists():
            built, found, age, gender = aaf_faces(args.aaf, images.shape[1])
            np.savez(CACHE / "aaf_labels.npz", found=found, age=age, gender=gender)
            model_preds(built, "aaf")
        labels = np.load(CACHE / "aaf_labels.npz")
        found = labels["found"]
        add("aaf_train_2000", f"AAF-train-2000 through the detector ({found.mean():.1%} found): "
            f"another collection, mostly East Asian", labels["age"][found], labels["gender"][found],
            with_ensemble(model_preds(None, "aaf")))  # fmt: skip
    document = {"level": level, "model_md5": model_md5s(), "shifts": shifts}
    OUT.write_text(json.dumps(document, indent=2) + "\n")
    print(f"shifts: wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
