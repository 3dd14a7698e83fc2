"""Wall time and throughput of the prepare stage on data.raw at the params in params.yaml.

    python benchmarks/prepare_speed.py        (target: the 20,708-file archive in <= 30 s)

Runs the stage as dvc does (`python -m stages.prepare`), in a scratch folder, so
data/prepared is left alone; the time includes Python's start-up (about 2 s).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agegender import params as P
from agegender.layout import SUMMARY


def main() -> None:
    root = Path.cwd()
    params = P.load()
    raw = Path(params.data.raw).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(root / "params.yaml", tmp)
        target = Path(tmp) / params.data.raw
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(raw)
        env = {**os.environ, "PYTHONPATH": str(root)}  # stages/ from the checkout
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=tmp, env=env, check=True)
        seconds = time.perf_counter() - start
        files = json.loads((Path(tmp) / SUMMARY).read_text())["files"]
    print(
        f"prepare: {files} files in {seconds:.1f}s = {files / seconds:.0f} files/s "
        f"({os.cpu_count()} cores, {params.data.image_size}px)"
    )


if __name__ == "__main__":
    main()
