"""Peak memory of training model A with each loader: the splits copied into memory, or
streamed from the memory-mapped files by training.Batches.

    python benchmarks/train_memory.py                    # data/prepared, 1 epoch each
    python benchmarks/train_memory.py --prepared PATH --epochs 2

Each run is `python -m stages.train_a` in a scratch folder at the params of params.yaml, but
for `train.loader.kind` and `model_a.fit.epochs`, sampled every 0.1 s: anonymous memory
(the process's own) and PSS (which also counts the pages of the memory-mapped files read so
far, pages the kernel can drop at will). Target: with `stream` the anonymous peak does not
grow with the training split.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from memory import ROOT, peak_memory  # benchmarks/memory.py

from agegender.layout import PREPARED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=ROOT / PREPARED)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    images = np.load(args.prepared / "train" / "images.npy", mmap_mode="r")
    print(f"train split: {images.shape[0]:,} faces, {images.nbytes / 2**20:.0f} MB of pixels")
    for kind in ("arrays", "stream"):
        with tempfile.TemporaryDirectory() as tmp:
            raw = yaml.safe_load((ROOT / "params.yaml").read_text())
            raw["train"]["loader"]["kind"] = kind
            raw["model_a"]["fit"]["epochs"] = args.epochs
            (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            (Path(tmp) / "data").mkdir()
            (Path(tmp) / PREPARED).symlink_to(args.prepared.resolve())
            command = [sys.executable, "-m", "stages.train_a"]
            seconds, peak, rc = peak_memory(command, Path(tmp))
            if rc:
                raise SystemExit(f"train_a failed with loader {kind} (exit {rc})")
            print(
                f"train_a, loader {kind}: {args.epochs} epoch(s), {seconds:.0f} s, peak "
                f"{peak['anonymous'] / 2**20:.0f} MB anonymous, {peak['pss'] / 2**20:.0f} MB PSS"
            )


if __name__ == "__main__":
    main()
