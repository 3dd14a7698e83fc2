"""Stage `prepare`: UTKFace archive or folder -> deduplicated, stratified splits.

Writes data/prepared/{train,val,test}/ (uint8 images, labels and file names, one .npy per
array), faces.csv (every input file with its status and split) and summary.json. Same input
and params give byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pandas as pd

from agegender import params as P
from agegender.data import write_prepared
from agegender.dataset import assign_status, decode_all, split, summarize
from agegender.errors import UserError, run
from agegender.layout import SPLITS
from agegender.utkface import parse_name, read_source


def main() -> None:
    params = P.load()
    data = params.data
    start = time.monotonic()
    members = sorted(  # archive order free
        (
            (m.name, "" if m.problem else hashlib.sha256(m.data).hexdigest(), m.data, m.problem)
            for m in read_source(Path(data.raw))
        ),
        key=lambda m: m[:2],
    )
    if not members:
        raise UserError(f"{data.raw}: holds no files; point data.raw at the UTKFace download")
    names, hashes, blobs, problems = (list(column) for column in zip(*members, strict=True))
    del members
    print(f"prepare: read {len(names)} files from {data.raw} in {time.monotonic() - start:.1f}s")

    labels = [parse_name(n) for n in names]
    faces = pd.DataFrame(
        {
            "name": names,
            "sha256": hashes,
            "age": pd.array([lab.age for lab in labels], dtype="Int64"),
            "gender": pd.array([lab.gender for lab in labels], dtype="Int64"),
            "race": [lab.race for lab in labels],
            "usable": [lab.usable for lab in labels],
            "problem": [lab.problem for lab in labels],
            "read_problem": problems,
        }
    )
    images, readable = decode_all(blobs, data.image_size)
    del blobs
    assign_status(faces, readable)
    faces["split"] = split(faces, data, params.seed)
    summary = summarize(faces, data.raw)
    write_prepared(faces, images, summary)

    counts = ", ".join(f"{k} {v}" for k, v in summary["status"].items())
    sizes = ", ".join(f"{s} {summary['splits'][s]['n']}" for s in SPLITS)
    print(f"prepare: {counts}; {summary['malformed_names']} malformed names")
    print(f"prepare: splits {sizes}; done in {time.monotonic() - start:.1f}s")


if __name__ == "__main__":
    run(main)
