"""Peak memory of a command and every process it starts: shared by the memory benchmarks."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from scratch import checkout_env  # benchmarks/scratch.py


def tree_memory(pid: int) -> dict[str, int]:
    """Bytes of a process and all its descendants (Linux /proc): `pss`, the proportional set
    size (pages the forked decoding workers share with the stage count once, not once per
    process as in RSS; file pages of a memory map count once read), and `anonymous`, the
    memory that is not a file's (what a memory-mapped split does not add to)."""
    total, todo = {"pss": 0, "anonymous": 0}, [pid]
    while todo:
        current = todo.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text().splitlines()
            for key, field in (("pss", "Pss:"), ("anonymous", "Anonymous:")):
                line = next(line for line in rollup if line.startswith(field))
                total[key] += 1024 * int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):  # gone meanwhile
            continue
    return total


def peak_memory(command: list[str], cwd: Path) -> tuple[float, dict[str, int], int]:
    """(seconds, peak bytes of each of tree_memory's measures, sampled every 0.1 s, exit
    code) of `command` run in `cwd` with this checkout's code on the path (stages/ from a
    scratch folder)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=checkout_env(), stdout=subprocess.DEVNULL)
    peak = {"pss": 0, "anonymous": 0}

    def sample() -> None:
        while proc.poll() is None:
            for key, value in tree_memory(proc.pid).items():
                peak[key] = max(peak[key], value)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    proc.wait()
    sampler.join()
    return time.perf_counter() - start, peak, proc.returncode
