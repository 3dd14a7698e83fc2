"""Wall time and throughput of the prepare stage on data.raw at the params in params.yaml.

    python benchmarks/prepare_speed.py        (target: the 20,708-file archive in <= 30 s)

Runs in a scratch folder, so data/prepared is left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from agegender import params as P
from stages import prepare


def main() -> None:
    root = Path.cwd()
    params = P.load()
    raw = Path(params.data.raw).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(root / "params.yaml", tmp)
        target = Path(tmp) / params.data.raw
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(raw)
        os.chdir(tmp)
        start = time.perf_counter()
        prepare.main()
        seconds = time.perf_counter() - start
        files = json.loads(Path("data/prepared/summary.json").read_text())["files"]
        os.chdir(root)
    print(
        f"prepare: {files} files in {seconds:.1f}s = {files / seconds:.0f} files/s "
        f"({os.cpu_count()} cores, {params.data.image_size}px)"
    )


if __name__ == "__main__":
    main()
