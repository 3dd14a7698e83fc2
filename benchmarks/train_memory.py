"""Peak memory of training with each loader: the splits copied into memory, or streamed
from the memory-mapped files by training.Batches.

    python benchmarks/train_memory.py                    # model A, data/prepared, 1 epoch each
    python benchmarks/train_memory.py --prepared PATH --epochs 2
    python benchmarks/train_memory.py --stage train_b    # model B's phase 1 (cached features)

Each run is `python -m stages.train_a` (or `train_b`, with phase 1 only: its feature pass over
the faces and their mirror images, then the heads on those features) in a scratch folder at
the params of params.yaml, but for `train.loader.kind` and the epochs, sampled every 0.1 s:
anonymous memory (the process's own) and PSS (which also counts the pages of the
memory-mapped files read or written so far, pages the kernel can drop at will). Target: with
`stream` the anonymous peak does not grow with the training split.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from memory import peak_memory  # benchmarks/memory.py
from scratch import ROOT, write_params

from agegender.layout import PREPARED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=ROOT / PREPARED)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--stage", choices=("train_a", "train_b"), default="train_a")
    args = parser.parse_args()
    images = np.load(args.prepared / "train" / "images.npy", mmap_mode="r")
    print(f"train split: {images.shape[0]:,} faces, {images.nbytes / 2**20:.0f} MB of pixels")
    epochs: dict[str, object] = {"model_a.fit.epochs": args.epochs}
    if args.stage == "train_b":  # phase 1 only
        epochs = {"model_b.phase1.epochs": args.epochs, "model_b.phase2.epochs": 0}
        epochs["model_b.phase2.warmup_epochs"] = 0
    for kind in ("arrays", "stream"):
        with tempfile.TemporaryDirectory() as tmp:
            write_params(Path(tmp), {"train.loader.kind": kind, **epochs})
            (Path(tmp) / "data").mkdir()
            (Path(tmp) / PREPARED).symlink_to(args.prepared.resolve())
            command = [sys.executable, "-m", f"stages.{args.stage}"]
            seconds, peak, rc = peak_memory(command, Path(tmp))
            if rc:
                raise SystemExit(f"{args.stage} failed with loader {kind} (exit {rc})")
            print(
                f"{args.stage}, loader {kind}: {args.epochs} epoch(s), {seconds:.0f} s, peak "
                f"{peak['anonymous'] / 2**20:.0f} MB anonymous, {peak['pss'] / 2**20:.0f} MB PSS"
            )


if __name__ == "__main__":
    main()
