"""Decoding an archive's images on all cores, in a stream: memory stays bounded whatever
the archive holds.

Two passes over the source. `scan` hashes every file and checks that it decodes, keeping
no pixels; `fill` reads the source again and decodes only the faces the split kept, each
written straight to its row of the split's file. Files travel to the workers in chunks of
at most CHUNK files and CHUNK_BYTES bytes, and at most IN_FLIGHT chunks per worker are out
at once, so neither a large archive nor an archive of huge members can exhaust memory.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from agegender.errors import UserError
from agegender.images import decode
from agegender.prepare.archive import Member, read_source

CHUNK = 256  # files per worker task at most
CHUNK_BYTES = 64 << 20  # bytes of files (or of decoded pixels) per task at most
IN_FLIGHT = 2  # tasks per worker submitted ahead

T = TypeVar("T")
R = TypeVar("R")


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


def chunks(items: Iterable[T], size: Callable[[T], int], most: int, most_bytes: int):
    """Lists of consecutive items, each of at most `most` items and `most_bytes` bytes (an
    item larger than that alone makes a chunk of one)."""
    chunk: list[T] = []
    total = 0
    for item in items:
        if chunk and (len(chunk) == most or total + size(item) > most_bytes):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += size(item)
    if chunk:
        yield chunk


def in_order(pool: ProcessPoolExecutor, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
    """pool.map, but lazy: `Executor.map` submits every task at once, holding them all."""
    window = IN_FLIGHT * (pool._max_workers or 1)  # noqa: SLF001 (the pool's own size)
    pending: deque[Future] = deque()
    for task in tasks:
        pending.append(pool.submit(fn, task))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def sha256(member: Member) -> str:
    """The file's content hash; "" for a file that was not read (its problem says why)."""
    return "" if member.problem else hashlib.sha256(member.data).hexdigest()


def _scan_chunk(args: tuple[list[bytes], int]) -> list[bool]:
    blobs, size = args
    return [decode(data, size) is not None for data in blobs]


def _decode_chunk(args: tuple[list[bytes], int]) -> np.ndarray:
    blobs, size = args
    return np.stack([decode(data, size) for data in blobs])


def _pool(workers: int | None) -> ProcessPoolExecutor:
    return worker_pool(workers or os.cpu_count() or 1)


def scan(source: Path, size: int, add: Callable[[list[tuple[str, str, str, bool]]], None]) -> int:
    """Hash every file and check that it decodes; `add` gets (name, sha256, problem, decodes)
    of each, in the source's order, a chunk at a time. Returns the number of files."""
    members = read_source(source)
    first = next(members, None)  # a missing or broken source stops here, before any bar
    if first is None:
        return 0
    pending: deque[list[tuple[str, str, str]]] = deque()  # the files of the chunks out

    def tasks() -> Iterator[tuple[list[bytes], int]]:
        stream = itertools.chain([first], members)
        for chunk in chunks(stream, lambda m: len(m.data), CHUNK, CHUNK_BYTES):
            pending.append([(m.name, sha256(m), m.problem) for m in chunk])
            yield [m.data for m in chunk], size

    files = 0
    bar = tqdm(desc="prepare: reading", unit=" files", mininterval=2)
    pool = _pool(None)
    try:
        for ok in in_order(pool, _scan_chunk, tasks()):
            add([(*file, good) for file, good in zip(pending.popleft(), ok, strict=True)])
            files += len(ok)
            bar.update(len(ok))
    finally:
        bar.close()  # on Ctrl-C, drop the queued chunks instead of decoding them all first
        pool.shutdown(cancel_futures=True)
    return files


def fill(
    source: Path, size: int, place: Callable[[str, str], tuple[Any, int] | None], kept: int
) -> None:
    """Decode each kept file into its row of its array (anything that takes
    `array[row] = pixels`): `place(name, sha256)` says where, or None for a file not kept,
    and for a second identical copy (same name and content) of one already placed.
    """

    def wanted() -> Iterator[tuple[tuple[Any, int], bytes]]:
        for member in read_source(source):
            spot = place(member.name, sha256(member))
            if spot is not None:
                yield spot, member.data

    per_chunk = max(1, min(CHUNK, CHUNK_BYTES // (size * size * 3)))  # pixels come back too
    batches = chunks(wanted(), lambda item: len(item[1]), per_chunk, CHUNK_BYTES)
    spots: deque[list[tuple[Any, int]]] = deque()

    def tasks() -> Iterator[tuple[list[bytes], int]]:
        for batch in batches:
            spots.append([spot for spot, _ in batch])
            yield [data for _, data in batch], size

    done = 0
    bar = tqdm(total=kept, desc="prepare: decoding", unit=" faces", mininterval=2)
    pool = _pool(None)
    try:
        for pixels in in_order(pool, _decode_chunk, tasks()):
            for (array, row), image in zip(spots.popleft(), pixels, strict=True):
                array[row] = image
            done += len(pixels)
            bar.update(len(pixels))
    finally:
        bar.close()
        pool.shutdown(cancel_futures=True)
    if done < kept:
        raise UserError(
            f"{source}: changed while prepare read it ({kept - done} of the faces it chose are "
            f"gone); rerun"
        )
