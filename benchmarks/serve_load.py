"""agegender-serve under load: requests/s, latency, errors and the server's memory.

    python benchmarks/serve_load.py                         # 1, 4, 16 clients, 60 s each
    python benchmarks/serve_load.py --clients 16 --seconds 20 --kinds photo

Starts `agegender-serve` (the project's models, its default limits) on a free localhost
port, then for each kind of upload and each number of clients runs that many threads, each
sending one request after another on its own keep-alive connection until the run's time is
up (bounded, self-stopping traffic). Uploads: `photo`, scikit-image's astronaut (512x512
JPEG, faces detected, model B); `crop`, her face cropped like a UTKFace crop (crops=true).
Prints a markdown table: requests/s, latency percentiles, errors (anything but 200), and
the server's resident memory at the run's first second, its peak, and at its last second.
Targets: 0 errors at 16 clients, and memory flat (the last second within 5 % of the first).
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image


def uploads() -> dict[str, tuple[str, bytes]]:
    """{kind: (query, JPEG bytes)}."""
    photo = Image.fromarray(skimage.data.astronaut())
    crop = photo.crop((140, 40, 270, 170))  # her face with a margin, as UTKFace crops it

    def jpeg(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=90)
        return out.getvalue()

    return {"photo": ("/analyze", jpeg(photo)), "crop": ("/analyze?crops=true", jpeg(crop))}


def rss(pid: int) -> int:
    """Resident bytes of the server process (uvicorn serves from one process)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return 1024 * int(line.split()[1])
    return 0


def start_server(port: int) -> subprocess.Popen:
    command = shutil.which("agegender-serve", path=str(Path(sys.executable).parent))
    server = subprocess.Popen(
        [command or "agegender-serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # uvicorn's access log: a line per request
    )
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except OSError:
            if server.poll() is not None:
                sys.exit("agegender-serve stopped; run it alone to see why")
            time.sleep(0.2)
    server.kill()
    sys.exit("agegender-serve did not answer /health within 2 minutes")


def load(port: int, path: str, body: bytes, clients: int, seconds: float, pid: int) -> dict:
    """`clients` threads posting `body` for `seconds`; latencies, errors and memory."""
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    memory: list[int] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                connection.request("POST", path, body, {"Content-Type": "image/jpeg"})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    errors.append(str(response.status))
                latencies.append(time.perf_counter() - start)
            except OSError as error:  # a dropped connection: counted, and a new one
                errors.append(type(error).__name__)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        memory.append(rss(pid))
        time.sleep(1.0)
    wall = time.monotonic() - began
    ms = np.array(latencies) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99]) if len(ms) else (np.nan,) * 3
    return {
        "requests": len(latencies),
        "per_second": len(latencies) / wall,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "errors": len(errors),
        "rss_first": memory[1] if len(memory) > 1 else memory[0],  # at the first second
        "rss_peak": max(memory),
        "rss_last": memory[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=60.0, help="per run (default 60)")
    parser.add_argument("--kinds", nargs="+", default=["crop", "photo"], choices=["crop", "photo"])
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bodies = uploads()
    server = start_server(port)
    try:
        print(f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.1f}")
        print(
            "| upload | clients | requests/s | p50 ms | p95 ms | p99 ms | errors "
            "| RSS 1st s (MB) | peak (MB) | last s (MB) |"
        )
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for kind in args.kinds:
            path, body = bodies[kind]
            for clients in args.clients:
                r = load(port, path, body, clients, args.seconds, server.pid)
                print(
                    f"| {kind} | {clients} | {r['per_second']:.1f} | {r['p50']:.0f} "
                    f"| {r['p95']:.0f} | {r['p99']:.0f} | {r['errors']} "
                    f"| {r['rss_first'] / 2**20:.0f} | {r['rss_peak'] / 2**20:.0f} "
                    f"| {r['rss_last'] / 2**20:.0f} |",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
