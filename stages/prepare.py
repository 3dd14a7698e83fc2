"""Stage `prepare`: UTKFace archive or folder -> deduplicated, stratified splits.

Writes data/prepared/{train,val,test}.npz (uint8 images + labels + names), faces.csv
(every input file with its status and split) and summary.json. Same input and params
give byte-identical outputs.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from stages import params as P
from stages.errors import UserError, atomic_path, clean_stale_temps, run, write_text
from stages.utkface import (
    AGE_BUCKETS,
    RACES,
    UNKNOWN_RACE,
    age_bucket,
    decode,
    parse_name,
    read_source,
)

OUT = Path("data/prepared")
SPLITS = ("train", "val", "test")
OUTPUTS = tuple(f"{s}.npz" for s in SPLITS) + ("faces.csv", "summary.json")
STATUSES = ("ok", "malformed", "duplicate", "conflict", "unreadable")
CHUNK = 256  # files per worker task


def _decode_chunk(args: tuple[list[bytes], int]) -> tuple[np.ndarray, np.ndarray]:
    blobs, size = args
    images = np.zeros((len(blobs), size, size, 3), np.uint8)
    ok = np.zeros(len(blobs), bool)
    for i, data in enumerate(blobs):
        pixels = decode(data, size)
        if pixels is not None:
            images[i], ok[i] = pixels, True
    return images, ok


def _worker_init(parent: int) -> None:
    """Workers leave Ctrl-C to the parent, which stops them, and die with the parent even
    when it is killed outright (SIGKILL), instead of living on as orphans."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
    )


def decode_all(blobs: list[bytes], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode every file on all cores, with a progress line every few seconds."""
    images = np.zeros((len(blobs), size, size, 3), np.uint8)
    ok = np.zeros(len(blobs), bool)
    tasks = [(blobs[i : i + CHUNK], size) for i in range(0, len(blobs), CHUNK)]
    start = last = time.monotonic()
    pool = worker_pool(min(os.cpu_count() or 1, max(1, len(tasks))))
    try:
        for k, (chunk_images, chunk_ok) in enumerate(pool.map(_decode_chunk, tasks)):
            lo = k * CHUNK
            images[lo : lo + len(chunk_ok)], ok[lo : lo + len(chunk_ok)] = chunk_images, chunk_ok
            now = time.monotonic()
            done = lo + len(chunk_ok)
            if now - last > 2 or done == len(blobs):
                rate = done / max(now - start, 1e-9)
                print(f"prepare: decoded {done}/{len(blobs)} files ({rate:.0f}/s)", flush=True)
                last = now
    finally:  # on Ctrl-C, drop the queued chunks instead of decoding them all first
        pool.shutdown(cancel_futures=True)
    return images, ok


def assign_status(faces: pd.DataFrame, readable: np.ndarray) -> None:
    """Fill faces.status/reason: ok, malformed, unreadable, duplicate or conflict."""
    faces["status"] = np.where(~faces.usable, "malformed", np.where(readable, "ok", "unreadable"))
    faces["reason"] = faces.problem
    unreadable = faces.status == "unreadable"
    faces.loc[unreadable, "reason"] = faces.read_problem[unreadable].replace(
        "", "cannot be decoded as an image"
    )
    candidates = faces[faces.status == "ok"]
    for _, group in candidates.groupby("sha256", sort=False):
        if len(group) == 1:
            continue
        labels = set(zip(group.age, group.gender, group.race, strict=True))
        others = ", ".join(group.name)
        if len(labels) == 1:
            faces.loc[group.index[1:], ["status", "reason"]] = [
                "duplicate",
                f"same image as {group.name.iloc[0]}",
            ]
        else:
            faces.loc[group.index, ["status", "reason"]] = [
                "conflict",
                f"same image, different labels: {others}",
            ]


def stratified_take(
    idx: np.ndarray, strata: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw n of idx so each stratum keeps its share (largest remainder); return (taken, rest)."""
    if n == 0 or len(idx) == 0:
        return np.array([], int), idx
    keys, counts = np.unique(strata, return_counts=True)
    exact = counts * n / len(idx)
    quota = np.floor(exact).astype(int)
    short = n - quota.sum()
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    taken = []
    for key, q in zip(keys, quota, strict=True):
        members = idx[strata == key]
        taken.append(rng.permutation(members)[:q])
    chosen = np.sort(np.concatenate(taken)) if taken else np.array([], int)
    return chosen, np.setdiff1d(idx, chosen)


def split(faces: pd.DataFrame, data: P.Data, seed: int) -> pd.Series:
    """Seeded subset -> train/val, and a test split from the usable faces left over."""
    usable = faces.index[faces.status == "ok"].to_numpy()
    if len(usable) < data.subset_size:
        raise UserError(
            f"params.yaml: data.subset_size is {data.subset_size} but {data.raw} has only "
            f"{len(usable)} usable faces; lower data.subset_size"
        )
    strata = (
        faces.gender * len(AGE_BUCKETS) + age_bucket(faces.age.fillna(0).astype(int))
    ).to_numpy()
    rng = np.random.default_rng(seed)
    subset, rest = stratified_take(usable, strata[usable], data.subset_size, rng)
    val, train = stratified_take(subset, strata[subset], data.val_size, rng)
    test, _ = stratified_take(rest, strata[rest], min(data.test_size, len(rest)), rng)
    out = pd.Series("", index=faces.index, dtype=object)
    out[faces.status == "ok"] = "unused"
    for name, rows in (("train", train), ("val", val), ("test", test)):
        out[rows] = name
    return out


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez, but byte-deterministic (fixed zip timestamps) and atomic."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)


def summarize(faces: pd.DataFrame, source: str) -> dict:
    def describe(rows: pd.DataFrame) -> dict:
        buckets = np.bincount(age_bucket(rows.age.astype(int)), minlength=len(AGE_BUCKETS))
        races = rows.race.map(lambda r: "Unknown" if r == UNKNOWN_RACE else RACES[r])
        return {
            "n": len(rows),
            "female_fraction": round(float(rows.gender.mean()), 4) if len(rows) else 0.0,
            "age_mean": round(float(rows.age.mean()), 2) if len(rows) else 0.0,
            "age_histogram": dict(zip(AGE_BUCKETS, buckets.tolist(), strict=True)),
            "race": {r: int(c) for r, c in races.value_counts().sort_index().items()},
        }

    status = faces.status.value_counts()
    odd = faces[faces.problem != ""]
    return {
        "source": source,
        "files": len(faces),
        "status": {s: int(status.get(s, 0)) for s in STATUSES},
        "malformed_names": len(odd),
        "malformed_names_recovered": int(odd.usable.sum()),
        "malformed_name_files": dict(zip(odd.name, odd.problem, strict=True)),
        "conflict_groups": int(faces[faces.status == "conflict"].sha256.nunique()),
        "duplicate_groups": int(faces[faces.status == "duplicate"].sha256.nunique()),
        "splits": {s: describe(faces[faces.split == s]) for s in (*SPLITS, "unused")},
    }


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then act on them as usual.

    A Python handler, not a blocked signal mask: any thread may receive the signal, but Python
    handlers always run in the main thread.
    """
    held = (signal.SIGINT, signal.SIGTERM)
    got: list[int] = []
    before = [signal.signal(s, lambda signum, _: got.append(signum)) for s in held]
    try:
        yield
    finally:
        for s, handler in zip(held, before, strict=True):
            signal.signal(s, handler)
        for s in got:
            signal.raise_signal(s)


def publish(staging: Path, out: Path) -> None:
    """Move one run's outputs from `staging` into `out` together: the old set goes first and
    Ctrl-C waits until the new one is in, so `out` never mixes two runs' files."""
    with signals_deferred():
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
        for name in OUTPUTS:
            os.replace(staging / name, out / name)


def write_outputs(faces: pd.DataFrame, images: np.ndarray, summary: dict) -> None:
    """Write everything into a staging folder beside OUT, then publish it; the staging
    folder of a killed run is removed by the next."""
    clean_stale_temps(OUT)
    OUT.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{OUT.name}.", dir=OUT.parent))
    try:
        for name in SPLITS:
            rows = faces.index[faces.split == name].to_numpy()
            save_npz(
                staging / f"{name}.npz",
                images=images[rows],
                age=faces.age.to_numpy()[rows].astype(np.int16),
                gender=faces.gender.to_numpy()[rows].astype(np.int8),
                race=faces.race.to_numpy()[rows].astype(np.int8),
                name=np.array(faces.name.to_numpy()[rows], dtype=str),
            )
        columns = ["name", "sha256", "age", "gender", "race", "status", "reason", "split"]
        write_text(staging / "faces.csv", faces[columns].to_csv(index=False, lineterminator="\n"))
        write_text(staging / "summary.json", json.dumps(summary, indent=2) + "\n")
        publish(staging, OUT)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main() -> None:
    params = P.load()
    data = params.data
    start = time.monotonic()
    members = sorted(  # archive order free
        (
            (m.name, "" if m.problem else hashlib.sha256(m.data).hexdigest(), m.data, m.problem)
            for m in read_source(Path(data.raw))
        ),
        key=lambda m: m[:2],
    )
    if not members:
        raise UserError(f"{data.raw}: holds no files; point data.raw at the UTKFace download")
    names, hashes, blobs, problems = (list(column) for column in zip(*members, strict=True))
    del members
    print(f"prepare: read {len(names)} files from {data.raw} in {time.monotonic() - start:.1f}s")

    labels = [parse_name(n) for n in names]
    faces = pd.DataFrame(
        {
            "name": names,
            "sha256": hashes,
            "age": pd.array([lab.age for lab in labels], dtype="Int64"),
            "gender": pd.array([lab.gender for lab in labels], dtype="Int64"),
            "race": [lab.race for lab in labels],
            "usable": [lab.usable for lab in labels],
            "problem": [lab.problem for lab in labels],
            "read_problem": problems,
        }
    )
    images, readable = decode_all(blobs, data.image_size)
    del blobs
    assign_status(faces, readable)
    faces["split"] = split(faces, data, params.seed)
    summary = summarize(faces, data.raw)
    write_outputs(faces, images, summary)

    counts = ", ".join(f"{k} {v}" for k, v in summary["status"].items())
    sizes = ", ".join(f"{s} {summary['splits'][s]['n']}" for s in SPLITS)
    print(f"prepare: {counts}; {summary['malformed_names']} malformed names")
    print(f"prepare: splits {sizes}; done in {time.monotonic() - start:.1f}s")


if __name__ == "__main__":
    run(main)
