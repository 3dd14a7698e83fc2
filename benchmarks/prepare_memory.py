"""Peak memory of the prepare stage: the real archive against one ten times its size.

    python benchmarks/prepare_memory.py                 # data.raw, and 10x of it
    python benchmarks/prepare_memory.py --times 10 --keep /tmp/big.tar

The bigger archive holds every file of data.raw ten times, each copy under a new name (its
timestamp field changed) and with one different byte after the image data, so that every
copy is a distinct face file to prepare's deduplication yet decodes like the original.
Each run is `python -m stages.prepare` in a scratch folder at the params of params.yaml;
memory is the proportional set size (PSS) of the whole process tree (the stage and its
decoding workers), sampled every 0.1 s. Target: the peak stays flat as the archive grows
(prepare keeps its table of names, hashes and labels on disk, table.py, and never the
pixels of more than a few bounded chunks).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from memory import peak_memory  # benchmarks/memory.py
from scratch import write_params

from agegender import params as P
from agegender.layout import SUMMARY
from agegender.prepare.archive import read_source


def run_prepare(archive: Path) -> tuple[float, int, int]:
    """(seconds, peak bytes of the process tree, files) of prepare on `archive`."""
    with tempfile.TemporaryDirectory() as tmp:
        write_params(Path(tmp), {"data.raw": str(archive.resolve())})
        seconds, peak, rc = peak_memory([sys.executable, "-m", "stages.prepare"], Path(tmp))
        if rc:
            raise SystemExit(f"prepare failed on {archive} (exit {rc})")
        summary = json.loads((Path(tmp) / SUMMARY).read_text())
        return seconds, peak["pss"], summary["files"]


def bigger(source: Path, times: int, out: Path) -> None:
    """`times` distinct copies of every file of `source` in one uncompressed tar."""
    with tarfile.open(out, "w") as tar:
        for member in read_source(source):
            if member.problem or not member.data:
                continue
            parts = member.name.split("_")
            for copy in range(times):
                name = member.name
                if len(parts) >= 4 and parts[3][:1].isdigit():  # the stamp's first digit
                    name = "_".join([*parts[:3], f"{copy % 10}{parts[3][1:]}", *parts[4:]])
                elif copy:
                    name = f"{copy}-{name}"
                data = member.data + bytes([copy % 256])  # after the image: decodes the same
                info = tarfile.TarInfo(f"UTKFace/{name}")
                info.size = len(data)
                tar.addfile(info, fileobj=io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="write (or reuse) the bigger archive here")
    args = parser.parse_args()
    source = Path(P.load().data.raw)
    work = Path(tempfile.mkdtemp())
    try:
        big = args.keep or work / f"x{args.times}.tar"
        if not big.exists():
            start = time.perf_counter()
            bigger(source, args.times, big)
            size, took = big.stat().st_size / 2**20, time.perf_counter() - start
            print(f"wrote {big}: {size:.0f} MB in {took:.0f} s")
        for archive in (source, big):
            seconds, peak, files = run_prepare(archive)
            print(
                f"prepare on {archive.name}: {files:,} files, {seconds:.0f} s, "
                f"peak {peak / 2**20:.0f} MB (PSS of the process tree), {os.cpu_count()} cores"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
