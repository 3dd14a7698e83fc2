"""Peak memory of agegender-predict on large images, by number of decoding threads.

    python benchmarks/predict_memory.py               # four 36 MP 16-bit PNGs, workers 1 and 4
    python benchmarks/predict_memory.py --side 4000 --workers 1 2 4 8

Each run is `agegender-predict FOLDER --workers N` (model B, faces detected) in a scratch
folder; memory is the proportional set size of the process, sampled every 0.1 s. Target:
the peak does not grow with --workers (the decode budget in agegender/images.py lets 40 MP
be decoded at once over all threads, and the memory a thread freed is handed back).
Measured on 2 AMD EPYC cores before the budget: 2.8 GB with 1 worker, 6.2 GB with 4.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from memory import peak_memory  # benchmarks/memory.py
from PIL import Image


def write_images(folder: Path, side: int, count: int) -> None:
    """Smooth 16-bit greyscale gradients: small files, `side` x `side` pixels decoded."""
    ramp = np.add.outer(np.arange(side), np.arange(side)) * 5
    for i in range(count):
        Image.fromarray((ramp + i).astype(np.uint16)).save(folder / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=6000, help="pixels a side (default 6000)")
    parser.add_argument("--count", type=int, default=4, help="images (default 4)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    command = shutil.which("agegender-predict", path=str(Path(sys.executable).parent))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        write_images(folder, args.side, args.count)
        print(f"{args.count} 16-bit PNGs of {args.side}x{args.side} pixels")
        print("workers  seconds  peak PSS (GB)")
        for workers in args.workers:
            run = [command, str(folder), "--workers", str(workers)]
            seconds, peak, _ = peak_memory(run, folder)
            print(f"{workers:>7}  {seconds:>7.1f}  {peak['pss'] / 1e9:>13.2f}")


if __name__ == "__main__":
    main()
