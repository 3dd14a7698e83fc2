"""Each stage's wall time from a clean run, and the time of a no-op `dvc repro`.

    python benchmarks/pipeline_times.py          # forces every stage: about 35-40 min at defaults
    python benchmarks/pipeline_times.py --noop   # only the no-op repro (target <= 3 s)

Targets on 2 CPU cores: the whole default pipeline <= 40 min; a no-op repro <= 3 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import yaml

# dvc.yaml's commands say `python -m stages...`: make that this interpreter, venv active or not.
ENV = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}


def timed(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", *args], check=True, env=ENV)  # progress shows
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noop", action="store_true", help="time only a repro with nothing to do")
    args = parser.parse_args()
    total = 0.0
    if not args.noop:
        with open("dvc.yaml") as handle:
            stages = list(yaml.safe_load(handle)["stages"])
        for stage in stages:
            seconds = timed("repro", "--force", "--single-item", stage)
            total += seconds
            print(f"{stage:10s} {seconds:7.1f}s", flush=True)
        print(f"{'total':10s} {total:7.1f}s ({total / 60:.1f} min)")
    timed("repro")  # settle: the first call may still have work, e.g. a cold cache
    print(f"{'no-op':10s} {timed('repro'):7.1f}s  (dvc repro with nothing to do)")


if __name__ == "__main__":
    main()
