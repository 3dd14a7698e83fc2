"""From the raw UTKFace files to a table of faces: checked, deduplicated, split.

The `prepare` stage calls these in order on its table of files (table.py); every step is
deterministic for a given seed, and none holds more than a few rows per file in memory.
"""

from __future__ import annotations

import itertools

import numpy as np

from agegender import params as P
from agegender.errors import UserError
from agegender.labels import AGE_BUCKETS, RACES, UNKNOWN_RACE, age_bucket
from agegender.layout import SPLIT_NAMES
from agegender.prepare.table import FileTable

STATUSES = ("ok", "malformed", "duplicate", "conflict", "unreadable")
SHOWN = 5  # names a conflict's reason lists


def assign_status(table: FileTable) -> None:
    """Fill status/reason: ok, malformed, unreadable, duplicate or conflict.

    Copies of one image (same sha256) with the same labels keep the first by name and mark
    the rest duplicate; copies whose labels differ are all conflict, since no one can say
    which label is right.
    """
    table.db.execute(
        """UPDATE faces SET
            status = CASE WHEN NOT usable THEN 'malformed'
                          WHEN readable THEN 'ok' ELSE 'unreadable' END,
            reason = CASE WHEN usable AND NOT readable AND read_problem = ''
                              THEN 'cannot be decoded as an image'
                          WHEN usable AND NOT readable THEN read_problem
                          ELSE problem END"""
    )
    # The marks go to a table of their own while the query over faces is still being read.
    table.db.execute("CREATE TEMP TABLE marks (pos INTEGER PRIMARY KEY, status TEXT, reason TEXT)")
    copies = table.rows(
        """SELECT sha256, pos, name, age, gender, race FROM faces WHERE status = 'ok' AND
           sha256 IN (SELECT sha256 FROM faces WHERE status = 'ok'
                      GROUP BY sha256 HAVING count(*) > 1)
           ORDER BY sha256, pos"""
    )
    for _, group in itertools.groupby(copies, key=lambda row: row[0]):
        rows = list(group)
        names = [row[2] for row in rows]
        if len({row[3:] for row in rows}) == 1:
            marks = [(row[1], "duplicate", f"same image as {names[0]}") for row in rows[1:]]
        else:
            # At most SHOWN names in each row's reason: listing a group of N in each of its N
            # rows made faces.csv quadratic (4,000 copies: 623 MB).
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            reason = f"same image, different labels: {', '.join(names[:SHOWN])}{more}"
            marks = [(row[1], "conflict", reason) for row in rows]
        table.db.executemany("INSERT INTO marks VALUES (?, ?, ?)", marks)
    table.db.execute(
        "UPDATE faces SET status = marks.status, reason = marks.reason "
        "FROM marks WHERE faces.pos = marks.pos"
    )
    table.db.execute("DROP TABLE marks")
    table.db.commit()


def stratified_take(
    idx: np.ndarray, strata: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw n of idx so each stratum keeps its share (largest remainder); return (taken, rest)."""
    if n == 0 or len(idx) == 0:
        return np.array([], int), idx
    keys, counts = np.unique(strata, return_counts=True)
    exact = counts * n / len(idx)
    quota = np.floor(exact).astype(int)
    short = n - quota.sum()
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    taken = []
    for key, q in zip(keys, quota, strict=True):
        members = idx[strata == key]
        taken.append(rng.permutation(members)[:q])
    chosen = np.sort(np.concatenate(taken)) if taken else np.array([], int)
    return chosen, np.setdiff1d(idx, chosen)


def _usable(table: FileTable) -> tuple[np.ndarray, np.ndarray]:
    """(positions, strata) of the usable faces: 6 bytes a face, all the memory the split
    needs. (The draw depends on the number of faces and the strata, not on these dtypes.)"""
    n = table.value("SELECT count(*) FROM faces WHERE status = 'ok'")
    rows = table.rows("SELECT pos, gender, age FROM faces WHERE status = 'ok' ORDER BY pos")
    usable = np.fromiter(rows, np.dtype([("pos", "i4"), ("gender", "i2"), ("age", "i2")]), n)
    strata = usable["gender"] * len(AGE_BUCKETS) + age_bucket(usable["age"])
    return usable["pos"].copy(), strata.astype(np.int16)


def split(table: FileTable, data: P.Data, seed: int) -> None:
    """Seeded subset -> train/val, and a test split from the usable faces left over; fills
    each face's split ('unused' for a usable face drawn into none) and its row in that
    split's arrays.

    data.train_all then adds the faces still unused to train: val and test are the same
    faces as without it, so the two runs' scores compare face for face.
    """
    usable, strata = _usable(table)
    if len(usable) == 0:
        counts = dict(table.rows("SELECT status, count(*) FROM faces GROUP BY status"))
        by_status = ", ".join(f"{s} {counts[s]}" for s in STATUSES if counts.get(s, 0))
        files = sum(counts.values())
        raise UserError(
            f"{data.raw}: holds no usable face ({files} files: {by_status}); see the "
            f"README's Data section for the names and formats prepare reads"
        )
    if len(usable) < data.subset_size:
        raise UserError(
            f"params.yaml: data.subset_size is {data.subset_size} but {data.raw} has only "
            f"{len(usable)} usable faces; lower data.subset_size"
        )
    rng = np.random.default_rng(seed)
    in_usable = np.arange(len(usable), dtype=np.int32)  # indices into `usable`, mapped back
    subset, rest = stratified_take(in_usable, strata, data.subset_size, rng)
    val, train = stratified_take(subset, strata[subset], data.val_size, rng)
    test, unused = stratified_take(rest, strata[rest], min(data.test_size, len(rest)), rng)
    if data.train_all:  # drawn after val and test, so both stay the faces of the default split
        train = np.union1d(train, unused)
    table.db.execute("UPDATE faces SET split = 'unused' WHERE status = 'ok'")
    for name, rows in (("train", train), ("val", val), ("test", test)):
        places = ((name, row, int(usable[i])) for row, i in enumerate(rows))
        table.db.executemany("UPDATE faces SET split = ?, row = ? WHERE pos = ?", places)
    table.db.commit()


def summarize(table: FileTable, source: str) -> dict:
    """summary.json: the files by status, the odd names, and each split's make-up."""

    def describe(name: str) -> dict:
        n, females, ages = table.db.execute(
            "SELECT count(*), total(gender), total(age) FROM faces WHERE split = ?", (name,)
        ).fetchone()
        buckets = np.zeros(len(AGE_BUCKETS), int)
        for age, count in table.rows(
            "SELECT age, count(*) FROM faces WHERE split = ? GROUP BY age", name
        ):
            buckets[age_bucket(age)] += count
        races = {}
        for race, count in table.rows(
            "SELECT race, count(*) FROM faces WHERE split = ? GROUP BY race", name
        ):
            races["Unknown" if race == UNKNOWN_RACE else RACES[race]] = count
        return {
            "n": n,
            "female_fraction": round(females / n, 4) if n else 0.0,
            "age_mean": round(ages / n, 2) if n else 0.0,
            "age_histogram": dict(zip(AGE_BUCKETS, buckets.tolist(), strict=True)),
            "race": dict(sorted(races.items())),
        }

    status = dict(table.rows("SELECT status, count(*) FROM faces GROUP BY status"))
    odd = list(
        table.rows("SELECT name, problem, usable FROM faces WHERE problem != '' ORDER BY pos")
    )

    def groups(status: str) -> int:
        return table.value("SELECT count(DISTINCT sha256) FROM faces WHERE status = ?", status)

    return {
        "source": source,
        "files": table.value("SELECT count(*) FROM faces"),
        "status": {s: int(status.get(s, 0)) for s in STATUSES},
        "malformed_names": len(odd),
        "malformed_names_recovered": sum(usable for _, _, usable in odd),
        "malformed_name_files": {name: problem for name, problem, _ in odd},
        "conflict_groups": groups("conflict"),
        "duplicate_groups": groups("duplicate"),
        "splits": {s: describe(s) for s in SPLIT_NAMES},
    }
