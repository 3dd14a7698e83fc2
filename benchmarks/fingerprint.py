"""Does this machine reproduce the committed bytes? Every stage in miniature, in a minute.

    python benchmarks/fingerprint.py            # each stage's hash against the committed ones
    python benchmarks/fingerprint.py --record   # add this machine's hashes to fingerprints.json

Each stage's computation runs small, with the code, the params.yaml recipe and the runtime
settings (backend, threads: agegender/runtime.py) that `dvc repro` uses, on seeded data:

- prepare: the stage itself on a seeded 80-file archive, in a scratch folder;
- train_a: model A for 12 steps on seeded random faces at data.image_size (the setting of
  ../shared/tools/fingerprint_probe.py, so its hashes from other machines compare);
- train_b: model B (random backbone weights: nothing to download) for 3 steps with its
  phase-2 layers unfrozen, at model_b.input_size;
- save: both models written as evaluate reads them (.keras, no time stamps);
- evaluate: both saved models' flip-averaged predictions on 64 seeded faces.

The hash of each (sha256 of the weights, files or predictions; 16 hex digits) is looked up
in benchmarks/fingerprints.json under this CPU model, backend and thread count. All equal:
`dvc repro` here should give the committed dvc.lock byte for byte. A mismatch in train_a or
train_b alone means this CPU trains other bytes (its kernels add in another order): the
scores then move by about as much as another seed's, and `python scripts/compare_runs.py`
tells whether they do. A mismatch in prepare or save is a bug or other library versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scratch import ROOT, checkout_env, write_params

from agegender import runtime

runtime.configure(ROOT / "params.yaml")  # as every stage: before anything imports Keras

from agegender import environment  # noqa: E402
from agegender import params as P  # noqa: E402

TABLE = Path(__file__).with_name("fingerprints.json")
STEPS_A, STEPS_B, FACES = 12, 3, 64


def digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:16]


def weights_hash(model) -> str:
    return digest(*(np.asarray(w).tobytes() for w in model.get_weights()))


def prepare_hash(folder: Path) -> str:
    """The prepare stage on 80 seeded noise faces with UTKFace names."""
    rng = np.random.default_rng(0)
    archive = folder / "faces.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(80):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(
                buffer, format="JPEG", quality=90
            )
            info = tarfile.TarInfo(f"UTKFace/{1 + i % 90}_{i % 2}_{i % 5}_{1000 + i}.jpg")
            info.size, info.mtime = len(buffer.getvalue()), 0
            tar.addfile(info, io.BytesIO(buffer.getvalue()))
    write_params(
        folder,
        {
            "data.raw": str(archive),
            "data.image_size": 64,
            "data.subset_size": 60,
            "data.val_size": 20,
            "data.test_size": 10,
        },
    )
    done = subprocess.run(
        [sys.executable, "-m", "stages.prepare"],
        cwd=folder,
        env=checkout_env(),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"fingerprint: the prepare stage failed: {done.stderr.strip()[-500:]}")
    prepared = folder / "data" / "prepared"
    files = sorted(p for p in prepared.rglob("*") if p.is_file() and p.name != "summary.json")
    return digest(*(p.relative_to(prepared).as_posix().encode() + p.read_bytes() for p in files))


def train(model, fit, loss, steps: int, size: int, seed: int) -> None:
    """`steps` steps of `fit` on seeded random faces (fingerprint_probe.py's recipe)."""
    from agegender.training.objective import compile_model

    n = fit.batch_size * steps
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    age = rng.uniform(0, 90, (n, 1)).astype("float32")
    gender = rng.integers(0, 2, (n, 1)).astype("float32")
    y = {k: gender if k == "gender" else age for k in model.output}
    compile_model(model, fit, loss, steps)
    model.fit(x, y, batch_size=fit.batch_size, epochs=1, verbose=0, shuffle=False)


def fingerprint(folder: Path) -> dict[str, str]:
    from agegender.evaluate.inference import load, predict
    from agegender.files import save_model
    from agegender.models.heads import copy_weights
    from agegender.models.model_a import build_model_a
    from agegender.models.model_b import backbone_of, build_model_b, unfreeze_top
    from agegender.training.loop import setup

    params = P.load(ROOT / "params.yaml")
    hashes = {"prepare": prepare_hash(folder)}
    setup(params.seed, params.train)
    size, a = params.data.image_size, params.model_a
    model_a = build_model_a(a, size, 0)
    train(model_a, a.fit, a.loss, STEPS_A, size, 0)
    hashes["train_a"] = weights_hash(model_a)

    b = dataclasses.replace(params.model_b, weights=None, head_init="random")
    model_b = build_model_b(b, size, 0)
    unfreeze_top(backbone_of(model_b), b.phase2.unfreeze, b.batch_norm, b.bn_momentum)
    train(model_b, b.phase2, b.loss, STEPS_B, size, 1)
    hashes["train_b"] = weights_hash(model_b)

    faces = np.random.default_rng(2).integers(0, 256, (FACES, size, size, 3), dtype=np.uint8)
    saved, predictions = [], []
    for name, trained, serving in (
        ("a", model_a, build_model_a(a, size, 0, serving=True)),
        ("b", model_b, build_model_b(b, size, 0, serving=True)),
    ):
        copy_weights(trained, serving)
        path = folder / f"{name}.keras"
        save_model(serving, path)
        saved.append(path.read_bytes())
        predictions.append(predict(load(str(path)), faces, 32, flips=(True,))[True].tobytes())
    hashes["save"] = digest(*saved)
    hashes["evaluate"] = digest(*predictions)
    return hashes


def machine_key() -> str:
    """CPU name and vector extensions (one name covers several generations: an AMD EPYC
    with AVX-512 and one without train different bytes), backend, threads."""
    env = environment.describe()
    flags = env["cpu_flags"]
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{env['cpu']} ({isa}) | {env['keras_backend']} | {env['threads']} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="store this machine's hashes")
    args = parser.parse_args()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fingerprint-") as tmp:
        hashes = fingerprint(Path(tmp))
    key, env = machine_key(), environment.describe()
    table = json.loads(TABLE.read_text()) if TABLE.exists() else {}
    known = table.get(key)
    print(f"machine: {key}; {', '.join(f'{k} {v}' for k, v in env['packages'].items())}")
    print(f"{'stage':<10} {'this machine':<18} {'committed':<18}")
    for stage, value in hashes.items():
        expected = (known or {}).get("hashes", {}).get(stage, "")
        mark = "" if not expected else "same" if expected == value else "DIFFERENT"
        print(f"{stage:<10} {value:<18} {expected or '(none)':<18} {mark}")
    print(f"fingerprint: {time.monotonic() - start:.0f} s")
    if args.record:
        table[key] = {
            "hashes": hashes,
            "cpu_flags": env["cpu_flags"],
            "packages": env["packages"],
            "python": env["python"],
        }
        TABLE.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
        print(f"recorded under {key!r} in {TABLE.relative_to(ROOT)}")
        return
    print(verdict(hashes, known, env, table))


def verdict(hashes: dict, known: dict | None, env: dict, table: dict) -> str:
    if known is None:
        others = [k for k, v in table.items() if v["hashes"].get("train_a") == hashes["train_a"]]
        same = f" It trains the same bytes as: {'; '.join(others)}." if others else ""
        return (
            f"verdict: no committed hashes for this CPU model, backend and thread count.{same} "
            f"Known machines: {'; '.join(table) or 'none'}. Expect `dvc repro` to change "
            f"dvc.lock unless train_a matches one of theirs; compare the scores with "
            f"`python scripts/compare_runs.py`."
        )
    differ = [s for s, v in hashes.items() if known["hashes"].get(s) not in (None, v)]
    if not differ:
        return (
            "verdict: this machine reproduces the committed bytes: `dvc repro` should leave "
            "`git status` clean."
        )
    if known.get("packages") != env["packages"]:
        return (
            f"verdict: {', '.join(differ)} differ, and the library versions differ from the "
            f"committed run's: install with `pip install -c constraints.txt -e .` and run again."
        )
    return (
        f"verdict: {', '.join(differ)} differ on the same CPU model, backend, threads and "
        f"library versions: that is a bug, please report it with this output."
    )


if __name__ == "__main__":
    main()
