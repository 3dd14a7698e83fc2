"""The work of agegender-evaluate and agegender-calibrate, after their arguments are read."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from agegender.errors import UserError
from agegender.evaluate import calibration as C
from agegender.evaluate.inference import load_model
from agegender.files import atomic_path, md5, save_model, write_text
from agegender.layout import PREPARED
from agegender.quiet import quiet_native_logs
from agegender.serve.api import calibration_for, find, model_files, model_for
from agegender.shift.arguments import MIN_CHECK, MIN_FIT
from agegender.shift.collect import Collected, collect
from agegender.shift.fit import fit_block
from agegender.shift.labelled import Faces, read_folder
from agegender.shift.scores import score
from agegender.spreadsheet import safe_cell

CSV_FIELDS = [
    "path", "age", "age_group", "gender", "face_found", "face_score",
    "predicted_age", "age_low", "age_high", "gender_prob", "abs_error",
]  # fmt: skip


# --- shared ---------------------------------------------------------------------------------


def load(model: str) -> list:
    with quiet_native_logs():  # TensorFlow's start-up lines
        return [load_model(path) for path in model_files(model)]


def gather(args, model: str) -> tuple[Faces, list, Collected]:
    faces = read_folder(args.folder)
    models = load(model)
    print(f"{len(faces)} labelled faces from {args.folder} ({faces.source}); model {model}")
    got = collect(
        faces.paths,
        models,
        crops=args.crops,
        min_face_score=args.min_face_score,
        flip=not args.no_flip,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    for line in got.errors[:5]:
        print(f"  unreadable: {line}")
    return faces, models, got


def pct(v) -> str:
    return "" if v is None else f"{v:.1%}"


def num(v, digits: int = 2, signed: bool = False) -> str:
    return "" if v is None else f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def table(scored: dict, level: float | None) -> str:
    """The scores as a readable text table: overall, then per age bucket."""
    held = f"{level:.0%} range holds" if level else "range holds"
    head = (
        f"{'':<8}{'faces':>7}{'age MAE':>9}{'within 5':>10}{'mean error':>12}{held:>18}{'width':>7}"
    )
    lines = [head]
    rows = [("all", scored.get("age"))] + list(scored.get("buckets", {}).items())
    for name, r in rows:
        if r is None:
            continue
        lines.append(
            f"{name:<8}{r['n']:>7}{num(r['age_mae']):>9}{pct(r['age_within_5']):>10}"
            f"{num(r['mean_signed_error'], signed=True):>12}{pct(r['coverage']):>18}"
            f"{num(r['mean_width'], 1):>7}"
        )
    if "gender" in scored:
        g = scored["gender"]
        after = f", {g['ece']:.3f} calibrated" if g["ece"] is not None else ""
        lines.append(
            f"gender: accuracy {g['gender_accuracy']:.2%} on {g['n']} faces; ECE "
            f"{g['ece_raw']:.3f} raw{after}"
        )
    if "age_groups" in scored:
        a = scored["age_groups"]
        lines.append(
            f"age groups ({', '.join(a['groups'])}): right {a['group_accuracy']:.1%}, "
            f"within one group {a['one_group_off']:.1%} on {a['n']} faces"
        )
    return "\n".join(lines)


def summary_line(scored: dict) -> str:
    """evaluate's printed line (gender, age MAE, within 5 years), to compare with its log."""
    g, a = scored.get("gender"), scored.get("age")
    parts = []
    if g:
        parts.append(f"gender {g['gender_accuracy']:.2%}")
    if a:
        parts.append(f"age MAE {a['age_mae']:.2f}, within 5 years {a['age_within_5']:.1%}")
    return ", ".join(parts)


def face_rows(faces: Faces, got: Collected, block: dict | None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    fitted = C.apply(block, got.pred[:, 0], got.pred[:, 1]) if block else None
    for i, path in enumerate(faces.paths):
        exact = not np.isnan(faces.age[i])
        group = "" if exact or np.isnan(faces.low[i]) else f"{faces.low[i]:g}-{faces.high[i]:g}"
        row = {
            "path": safe_cell(path),
            "age": f"{faces.age[i]:g}" if exact else "",
            "age_group": group,
            "gender": {0: "male", 1: "female"}.get(int(faces.gender[i]), ""),
            "face_found": int(got.found[i]),
            "face_score": "" if np.isnan(got.face_score[i]) else f"{got.face_score[i]:.4f}",
        }
        if got.found[i]:
            age = fitted["age"][i] if fitted else got.pred[i, 0]
            prob = fitted["gender_prob"][i] if fitted else got.pred[i, 1]
            row.update(predicted_age=f"{age:.1f}", gender_prob=f"{prob:.4f}")
            if fitted:
                row.update(
                    age_low=f"{fitted['age_low'][i]:.1f}", age_high=f"{fitted['age_high'][i]:.1f}"
                )
            if exact:
                row["abs_error"] = f"{abs(age - faces.age[i]):.2f}"
        writer.writerow(row)
    return out.getvalue()


# --- agegender-evaluate -----------------------------------------------------------------------


def evaluate(args) -> None:
    model = model_for(args.model, args.calibration)
    block = calibration_for(model, args.calibration)
    faces, _, got = gather(args, model)
    scored = score(faces, got.pred, block)
    scored.update(
        model=model, folder=str(args.folder), no_face=got.no_face, unreadable=len(got.errors)
    )
    level = None
    if block is not None:
        source = args.calibration or "evaluate's calibration.json (fitted on UTKFace val)"
        level = _level(args.calibration) if args.calibration else _project_level()
        scored["calibration"] = str(source)
        scored["level"] = level
    print(
        f"\n{scored['scored']} of {len(faces)} faces scored ({got.no_face} without a face found, "
        f"{len(got.errors)} unreadable); calibration: {scored.get('calibration', 'none')}"
    )
    print(table(scored, level))
    print(summary_line(scored))
    out = args.out or Path(f"evaluated-{args.folder.resolve().name}")
    write_text(out / "scores.json", json.dumps(scored, indent=2) + "\n")
    write_text(out / "faces.csv", face_rows(faces, got, block))
    print(f"wrote {out / 'scores.json'} and {out / 'faces.csv'}")


def _level(path) -> float:
    return float(json.loads(Path(path).read_text())["level"])


def _project_level() -> float:
    from agegender.layout import CALIBRATION

    path = find(CALIBRATION)
    return _level(path) if path else 0.8


# --- agegender-calibrate ----------------------------------------------------------------------


def split_rows(usable: np.ndarray, fit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (fitting rows, checking rows) among the usable ones."""
    rows = np.flatnonzero(usable)
    n_fit = fit if fit is not None else max(MIN_FIT, round(len(rows) / 5))
    if len(rows) < MIN_FIT + MIN_CHECK or n_fit > len(rows) - MIN_CHECK:
        raise UserError(
            f"{len(rows)} faces with a face found and an exact age: agegender-calibrate needs "
            f"{max(n_fit, MIN_FIT)} to fit and {MIN_CHECK} more to check; give more labelled faces"
            + (" or a smaller --fit" if fit is not None else "")
        )
    order = np.random.default_rng(seed).permutation(rows)
    return np.sort(order[:n_fit]), np.sort(order[n_fit:])


def training_faces() -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], str] | None:
    """UTKFace's prepared training faces (images, age, gender) where the project has them,
    and a key for their features' cache: the md5 of the names they are prepared from."""
    found = find(PREPARED / "train" / "images.npy")
    if found is None:
        return None
    from agegender.data import load_split

    split = load_split("train", found.parent.parent)
    faces = np.asarray(split.images), split.age.astype("float64"), split.gender.astype("int64")
    names = md5(found.parent / "name.npy")[:12]
    return faces, f"{names}-{faces[0].shape[1]}"


def calibrate(args) -> None:
    model = model_for(args.model, None)
    if args.adapt and (model == "A" or model == "ensemble"):
        raise UserError(f"--adapt retrains model B's heads; pass --model B, not {model}")
    faces, models, got = gather(args, model)
    usable = got.found & ~np.isnan(faces.age)
    fit_rows, check_rows = split_rows(usable, args.fit, args.seed)
    print(f"fitting on {len(fit_rows)} faces, checking on {len(check_rows)} (seed {args.seed})")
    pred = got.pred.copy()
    position = np.cumsum(got.found) - 1  # row -> its face's index in got.pixels
    out_of_fold, adapted_file, verdict = None, None, None
    if args.adapt:
        side = models[0].input_shape[1]
        train, key = training_faces() or (None, "")
        if train is None:
            print(
                f"adapt: no {PREPARED / 'train'} found (run `dvc repro prepare`): your faces alone"
            )
        model_md5 = md5(Path(model_files(model)[0]))[:12]
        adapted, out_of_fold, predict_images = adapt_heads(
            models[0], got.pixels[side][position[fit_rows]], faces, fit_rows, train, args.seed,
            f"{model_md5}-{key}",
        )  # fmt: skip
        new = pred.copy()
        new[check_rows] = predict_images(got.pixels[side][position[check_rows]])
        before = np.mean(np.abs(pred[check_rows, 0] - faces.age[check_rows]))
        after = np.mean(np.abs(new[check_rows, 0] - faces.age[check_rows]))
        keep = after < before
        verdict = {
            "mae_before": round(float(before), 3),
            "mae_after": round(float(after), 3),
            "kept": bool(keep),
        }
        print(
            f"adapt: age MAE on the checking faces {before:.2f} -> {after:.2f}: "
            + ("kept" if keep else "not kept (the unadapted model does better)")
        )
        if keep:
            adapted_file = args.out.with_suffix(".keras")
            save_model(adapted, adapted_file)
            pred = new
        else:
            out_of_fold = None
    fit_faces = faces.subset(fit_rows)
    shipped = calibration_for(model)  # the model's own calibration (UTKFace val), or None
    prior = shipped["gender_temperature"] if shipped and not adapted_file else 1.0
    block = fit_block(
        pred[fit_rows], fit_faces.age, fit_faces.gender, args.level, args.seed,
        out_of_fold, prior,
    )  # fmt: skip
    check = faces.subset(check_rows)
    original = got.pred[check_rows]
    before = score(check, original, shipped)
    after = score(check, pred[check_rows], block)
    written_model = adapted_file.name if adapted_file else model
    document = {
        "version": 1,
        "level": args.level,
        "fitted_on": f"{len(fit_rows)} faces of {args.folder} (seed {args.seed})",
        "faces": len(fit_rows),
        "model": written_model,
        "adapted": verdict,
        "check": {"faces": len(check_rows), "before": before, "after": after},
        "models": {C.USER: block},
    }
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
    C.read(args.out, C.USER)  # what predict will read: checked like calibration.json
    choice = block["age_map_choice"]
    print(
        f"\nage correction: {choice['kind']} (2-fold MAE on the fitting faces: "
        f"{choice['cv_mae']}); gender temperature {block['gender_temperature']} "
        f"({block['temperature_choice']['kept']})"
    )
    print(f"on the {len(check_rows)} checking faces, before (the model as shipped):")
    print(table(before, _project_level() if model in ("A", "B", "ensemble") else None))
    print("after:")
    print(table(after, args.level))
    wrote = f"wrote {args.out}" + (f" and {adapted_file}" if adapted_file else "")
    print(f"{wrote}; use it with agegender-predict --calibration {args.out}")


def adapt_heads(model, images, faces: Faces, rows, train, seed, cache_key):
    from agegender.shift.adapt import adapt

    return adapt(model, images, faces.age[rows], faces.gender[rows], train, seed, cache_key)
