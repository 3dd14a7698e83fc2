"""Stage `prepare`: UTKFace archive or folder -> deduplicated, stratified splits.

Writes data/prepared/{train,val,test}/ (uint8 images, labels and file names, one .npy per
array), faces.csv (every input file with its status and split) and summary.json. Same input
and params give byte-identical outputs. The table of files lives on disk (table.py), so
memory stays flat however large the archive.
"""

from __future__ import annotations

import time
from pathlib import Path

from agegender import params as P
from agegender.errors import UserError, run
from agegender.layout import SPLITS
from agegender.prepare.dataset import assign_status, split, summarize
from agegender.prepare.decoding import fill, scan
from agegender.prepare.store import staging, write_prepared
from agegender.prepare.table import FileTable

TABLE = "files.sqlite"  # in the staging folder: gone with it


def main() -> None:
    params = P.load()
    data = params.data
    source, side = Path(data.raw), data.image_size
    start = time.monotonic()
    with staging() as folder:
        table = FileTable(folder / TABLE)
        try:
            files = scan(source, side, table.add)  # keeps no pixels
            if not files:
                raise UserError(
                    f"{data.raw}: holds no files; point data.raw at the UTKFace download"
                )
            print(f"prepare: read and checked {files} files in {time.monotonic() - start:.1f}s")
            table.sort()
            assign_status(table)
            split(table, data, params.seed)
            summary = summarize(table, data.raw)
            write_prepared(
                folder, table, summary, side, lambda place, kept: fill(source, side, place, kept)
            )
        finally:
            table.close()

    counts = ", ".join(f"{k} {v}" for k, v in summary["status"].items())
    sizes = ", ".join(f"{s} {summary['splits'][s]['n']}" for s in SPLITS)
    print(f"prepare: {counts}; {summary['malformed_names']} malformed names")
    print(f"prepare: splits {sizes}; done in {time.monotonic() - start:.1f}s")


if __name__ == "__main__":
    run(main)
