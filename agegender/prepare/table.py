"""Prepare's table of files, on disk: one row per file of the source, with its name, hash,
labels, status and split.

An SQLite file in prepare's staging folder rather than a DataFrame in memory: in Python each
file's name, hash and labels took about 0.8 kB, so an archive of 500,000 faces would need
gigabytes before a pixel is decoded. SQLite keeps a small page cache (2 MB) and sorts on disk, so
prepare's memory stays flat however many files come (benchmarks/prepare_memory.py).
dataset.py states the rules (statuses, split, summary) as queries on this table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from agegender.errors import UserError
from agegender.labels import parse_name

SCHEMA = """
CREATE TABLE scanned (                -- the source's files, in the source's order (rowid)
    name TEXT, sha256 TEXT, read_problem TEXT, readable INT,
    age INT, gender INT, race INT, usable INT, problem TEXT
);
CREATE TABLE faces (                  -- the same rows, sorted (see sort())
    pos INTEGER PRIMARY KEY,          -- 0, 1, ...: the row's place in faces.csv
    name TEXT, sha256 TEXT, read_problem TEXT, readable INT,
    age INT, gender INT, race INT, usable INT, problem TEXT,
    status TEXT, reason TEXT,         -- dataset.assign_status
    split TEXT DEFAULT '', row INT,   -- dataset.split: the split and the row in its arrays
    filled INT DEFAULT 0              -- store: its pixels are written
);
"""
COLUMNS = "name, sha256, read_problem, readable, age, gender, race, usable, problem"


class FileTable:
    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE"):
            self.db.execute(f"PRAGMA {pragma}")  # a scratch file: no journal, no fsync
        self.db.executescript(SCHEMA)

    def add(self, files: Iterable[tuple[str, str, str, bool]]) -> None:
        """Append (name, sha256, read problem, decodes) of files in the source's order."""
        rows = []
        for name, sha256, read_problem, readable in files:
            lab = parse_name(name)
            row = (name, sha256, read_problem, readable, lab.age, lab.gender, lab.race)
            rows.append((*row, lab.usable, lab.problem))
        self.db.executemany(f"INSERT INTO scanned ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def sort(self) -> None:
        """Order the rows by (name, sha256), the source's order breaking ties: a face's place,
        and so the split, do not depend on how the archive was packed. (SQLite compares text
        as UTF-8 bytes, which orders like Python's str.)"""
        self.db.execute(
            f"INSERT INTO faces (pos, {COLUMNS}) SELECT "
            f"row_number() OVER (ORDER BY name, sha256, rowid) - 1, {COLUMNS} FROM scanned"
        )
        self.db.execute("DROP TABLE scanned")
        self.db.execute("CREATE INDEX by_file ON faces (name, sha256)")
        self.db.commit()

    def rows(self, sql: str, *params: object) -> Iterator[tuple]:
        """The rows of a query, fetched a few thousand at a time."""
        cursor = self.db.execute(sql, params)
        while batch := cursor.fetchmany(4096):
            yield from batch

    def value(self, sql: str, *params: object):
        """The one value a query returns (a count, a maximum)."""
        return self.db.execute(sql, params).fetchone()[0]

    def close(self) -> None:
        self.db.close()


def disk_error(error: sqlite3.Error, where: Path | str) -> UserError:
    """A failed write to the table, in one line (SQLite raises its own errors, not OSError)."""
    if "full" in str(error):
        cause = "no space left on the device (or a file-size limit, ulimit -f); free some"
    else:
        cause = f"{error}; check the disk and rerun"
    return UserError(f"cannot write {where}: {cause}")
