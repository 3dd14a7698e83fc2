"""Stage `prepare`: UTKFace archive or folder -> deduplicated, stratified splits.

Writes data/prepared/{train,val,test}/ (uint8 images, labels and file names, one .npy per
array), faces.csv (every input file with its status and split) and summary.json. Same input
and params give byte-identical outputs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from agegender import params as P
from agegender.dataset import assign_status, split, summarize
from agegender.decoding import fill, scan
from agegender.errors import UserError, run
from agegender.labels import parse_name
from agegender.layout import SPLITS
from agegender.store import write_prepared


def main() -> None:
    params = P.load()
    data = params.data
    source, side = Path(data.raw), data.image_size
    start = time.monotonic()
    names, hashes, problems, readable = scan(source, side)  # keeps no pixels
    if not names:
        raise UserError(f"{data.raw}: holds no files; point data.raw at the UTKFace download")
    print(f"prepare: read and checked {len(names)} files in {time.monotonic() - start:.1f}s")
    order = sorted(range(len(names)), key=lambda i: (names[i], hashes[i]))  # archive order free
    labels = [parse_name(names[i]) for i in order]
    faces = pd.DataFrame(
        {
            "name": [names[i] for i in order],
            "sha256": [hashes[i] for i in order],
            "age": pd.array([lab.age for lab in labels], dtype="Int64"),
            "gender": pd.array([lab.gender for lab in labels], dtype="Int64"),
            "race": [lab.race for lab in labels],
            "usable": [lab.usable for lab in labels],
            "problem": [lab.problem for lab in labels],
            "read_problem": [problems[i] for i in order],
        }
    )
    assign_status(faces, np.array([readable[i] for i in order], dtype=bool))
    faces["split"] = split(faces, data, params.seed)
    summary = summarize(faces, data.raw)
    write_prepared(faces, summary, side, lambda places: fill(source, side, places))

    counts = ", ".join(f"{k} {v}" for k, v in summary["status"].items())
    sizes = ", ".join(f"{s} {summary['splits'][s]['n']}" for s in SPLITS)
    print(f"prepare: {counts}; {summary['malformed_names']} malformed names")
    print(f"prepare: splits {sizes}; done in {time.monotonic() - start:.1f}s")


if __name__ == "__main__":
    run(main)
