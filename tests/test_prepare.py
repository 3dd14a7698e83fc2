import json
import shutil

import numpy as np
import pandas as pd
import pytest

from agegender import params as P
from agegender.data import load_split
from agegender.errors import UserError
from agegender.prepare import dataset
from agegender.prepare.table import FileTable
from stages import prepare
from tests.conftest import REAL_ARCHIVE, SMALL, md5s, write_params
from tests.synthetic import QUIRKS


def test_statuses_and_splits(project):
    prepare.main()
    out = project / "data" / "prepared"
    summary = json.loads((out / "summary.json").read_text())
    faces = pd.read_csv(out / "faces.csv", keep_default_na=False)
    assert summary["files"] == len(faces) == 420 + 2 + 4 + 6 + 4
    for status in ("duplicate", "conflict", "malformed", "unreadable"):
        assert summary["status"][status] == QUIRKS[status], status
    assert summary["malformed_names"] == QUIRKS["malformed_names"]
    assert {s["n"] for s in [summary["splits"]["train"]]} == {200}
    assert summary["splits"]["val"]["n"] == 100 and summary["splits"]["test"]["n"] == 100
    # Unusable files are in no split; usable ones are in exactly one.
    assert set(faces[faces.status != "ok"].split) == {""}
    assert set(faces[faces.status == "ok"].split) <= {"train", "val", "test", "unused"}
    # The odd formats were converted, not rejected.
    for name in ("40_0_1_20170101000000096.jpg.chip.jpg", "42_0_3_20170101000000094.jpg.chip.jpg"):
        assert faces.set_index("name").loc[name, "status"] == "ok"
    # The table of files lived in the staging folder, gone with it.
    assert sorted(p.name for p in (project / "data").iterdir()) == ["prepared", "raw"]


def test_the_table_orders_files_as_python_sorts_them(tmp_path):
    """A face's place (and so the split) must not depend on the archive's order; SQLite
    compares UTF-8 bytes, which must order names as Python's str does, any script or plane."""
    rng = np.random.default_rng(0)
    alphabet = ["a", "Z", "_", "0", "é", "ß", "Ω", "中", "\ue000", "\ufffd", "😀", "𝔸", "\x7f"]
    names = ["".join(rng.choice(alphabet, rng.integers(1, 6))) for _ in range(400)]
    files = [(name, f"{rng.integers(3):064x}", "", True) for name in names]
    files += files[:20]  # identical copies: ties keep the archive's order
    table = FileTable(tmp_path / "files.sqlite")
    table.add(files)
    table.sort()
    got = list(table.rows("SELECT name, sha256 FROM faces ORDER BY pos"))
    assert got == sorted((name, sha) for name, sha, _, _ in files)
    table.close()


def test_no_image_content_in_two_splits(project):
    prepare.main()
    faces = pd.read_csv(project / "data" / "prepared" / "faces.csv", keep_default_na=False)
    used = faces[faces.split.isin(["train", "val", "test"])]
    assert used.sha256.is_unique
    names = {
        s: set(load_split(s, project / "data" / "prepared").name) for s in ("train", "val", "test")
    }
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    assert not (names["val"] & names["test"])


def test_split_is_stratified(project):
    prepare.main()
    train = load_split("train", project / "data" / "prepared")
    val = load_split("val", project / "data" / "prepared")
    assert abs(train.gender.mean() - val.gender.mean()) < 0.02
    assert abs(np.median(train.age) - np.median(val.age)) < 6
    assert train.images.shape == (200, 32, 32, 3) and train.images.dtype == np.uint8


def test_byte_identical_reruns_and_seed_changes_split(project):
    prepare.main()
    out = project / "data" / "prepared"
    first = md5s(out)
    shutil.rmtree(out)
    prepare.main()
    assert md5s(out) == first
    write_params(project, [*SMALL, "seed=7"])
    prepare.main()
    assert md5s(out)["val"] != first["val"]


def test_train_all_adds_the_unused_faces_and_keeps_val_and_test(project):
    prepare.main()
    out = project / "data" / "prepared"
    first = md5s(out)
    before = pd.read_csv(out / "faces.csv", keep_default_na=False).set_index("name").split
    write_params(project, [*SMALL, "data.train_all=true"])
    prepare.main()
    after = pd.read_csv(out / "faces.csv", keep_default_na=False).set_index("name").split
    assert md5s(out)["val"] == first["val"] and md5s(out)["test"] == first["test"]
    assert (after[before == "train"] == "train").all()
    assert (after[before == "unused"] == "train").all() and (before == "unused").sum() > 0
    assert "unused" not in set(after)
    assert len(load_split("train", out)) == (before.isin(["train", "unused"])).sum()


def test_folder_source_gives_the_same_split(project, tmp_path):
    import tarfile

    prepare.main()
    out = project / "data" / "prepared"
    first = md5s(out)
    with tarfile.open(project / "data" / "raw" / "synthetic.tar.gz") as tar:
        tar.extractall(project / "data" / "raw", filter="data")
    raw = "data.raw=data/raw/UTKFace"
    write_params(
        project,
        [
            raw,
            "data.image_size=32",
            "model_a.stem_stride=1",  # lets model A pool a 32 px image
            "data.subset_size=300",
            "data.val_size=100",
            "data.test_size=100",
        ],
    )
    prepare.main()
    after = md5s(out)
    assert after["train"] == first["train"] and after["val"] == first["val"]


def test_too_few_faces_and_missing_source(project):
    write_params(project, ["data.raw=data/raw/synthetic.tar.gz", "data.subset_size=5000"])
    with pytest.raises(UserError, match="data.subset_size is 5000 but"):
        prepare.main()
    write_params(project, ["data.raw=data/raw/nothing.tar.gz"])
    with pytest.raises(UserError, match="put the archive at data/raw/UTKFace.tar.gz"):
        prepare.main()
    assert not (project / "data" / "prepared" / "train").exists()


@pytest.mark.skipif(not REAL_ARCHIVE.exists(), reason="../shared/datasets/UTKFace.tar.gz not here")
def test_real_archive_sample(project):
    write_params(
        project,
        [
            f"data.raw={REAL_ARCHIVE}",
            "data.image_size=32",
            "model_a.stem_stride=1",  # lets model A pool a 32 px image
            "data.subset_size=500",
            "data.val_size=100",
            "data.test_size=200",
        ],
    )
    prepare.main()
    summary = json.loads((project / "data" / "prepared" / "summary.json").read_text())
    assert summary["files"] == 20708
    assert summary["malformed_names"] == 8 and summary["malformed_names_recovered"] == 8
    assert summary["status"]["conflict"] > 400 and summary["status"]["duplicate"] > 100
    assert summary["status"]["unreadable"] == 0
    assert [summary["splits"][s]["n"] for s in ("train", "val", "test")] == [400, 100, 200]


def _table(tmp_path, files: list[tuple[str, str]]) -> FileTable:
    """A file table of (name, sha256) whose files all decode, statuses assigned."""
    table = FileTable(tmp_path / "files.sqlite")
    table.add([(name, sha, "", True) for name, sha in files])
    table.sort()
    dataset.assign_status(table)
    return table


def utk(age: int, gender: int, i: int) -> str:
    """A well-formed UTKFace name (age_gender_race_timestamp), told apart by i."""
    return f"{age}_{gender}_0_201701091505573{i:02d}.jpg.chip.jpg"


def test_copies_with_the_same_labels_are_duplicates_and_with_others_conflicts(tmp_path):
    """Two copies labelled alike: the second by name is a duplicate. Seven copies labelled
    apart: all conflict, each reason naming the first five and counting the rest; five
    copies: all five named."""
    files = [(utk(30, 0, 1), "a" * 64), (utk(30, 0, 2), "a" * 64)]
    files += [(utk(20 + i, 1, i), "b" * 64) for i in range(7)]
    files += [(utk(40 + i, 1, i), "c" * 64) for i in range(5)]
    table = _table(tmp_path, files)
    status = dict(table.rows("SELECT name, status || ': ' || reason FROM faces"))
    assert status[utk(30, 0, 1)] == "ok: "
    assert status[utk(30, 0, 2)] == f"duplicate: same image as {utk(30, 0, 1)}"
    names = ", ".join(utk(20 + i, 1, i) for i in range(5))
    assert status[utk(26, 1, 6)] == f"conflict: same image, different labels: {names} and 2 more"
    five = ", ".join(utk(40 + i, 1, i) for i in range(5))  # all named, no "and 0 more"
    assert status[utk(40, 1, 0)] == f"conflict: same image, different labels: {five}"
    table.close()


def test_a_subset_of_every_usable_face_is_allowed_one_more_is_not(tmp_path):
    table = _table(tmp_path, [(utk(20 + i, i % 2, i), f"{i:064x}") for i in range(10)])
    data = P.Data("faces.tar.gz", 32, 10, 4, 0, False)
    dataset.split(table, data, seed=0)
    splits = [s for (s,) in table.rows("SELECT split FROM faces ORDER BY pos")]
    assert sorted(splits) == ["train"] * 6 + ["val"] * 4
    test = dataset.summarize(table, "faces.tar.gz")["splits"]["test"]  # no test split: zeros
    assert (test["n"], test["female_fraction"], test["age_mean"]) == (0, 0.0, 0.0)
    with pytest.raises(UserError, match="data.subset_size is 11 but faces.tar.gz has only 10"):
        dataset.split(table, P.Data("faces.tar.gz", 32, 11, 4, 0, False), seed=0)
    table.close()


def test_drawing_none_uses_no_randomness():
    """A split of 0 faces must leave the generator as it was: the next split's faces would
    change with a size that drew nothing."""
    rng, fresh = np.random.default_rng(3), np.random.default_rng(3)
    taken, rest = dataset.stratified_take(np.arange(10), np.arange(10) % 2, 0, rng)
    assert len(taken) == 0 and rest.tolist() == list(range(10))
    assert rng.integers(1 << 30) == fresh.integers(1 << 30)


def test_no_usable_face_and_a_single_one_are_told_apart(tmp_path):
    table = _table(tmp_path, [("x.jpg", "a" * 64), ("y.jpg", "b" * 64)])
    data = P.Data("faces.tar.gz", 32, 2, 1, 0, False)
    with pytest.raises(
        UserError, match=r"^faces.tar.gz: holds no usable face \(2 files: malformed 2\); "
    ):
        dataset.split(table, data, seed=0)
    table.close()
    (tmp_path / "files.sqlite").unlink()
    table = _table(tmp_path, [("x.jpg", "a" * 64), (utk(30, 0, 1), "b" * 64)])
    with pytest.raises(UserError, match="data.subset_size is 2 but faces.tar.gz has only 1 usable"):
        dataset.split(table, data, seed=0)
    table.close()


def test_each_stratum_keeps_its_share_by_largest_remainder():
    """Strata of 6, 3 and 1 faces, 5 drawn: shares 3.0, 1.5 and 0.5; the one face left goes
    to the first of the equal remainders (stratum 1), never to the largest stratum."""
    strata = np.array([0] * 6 + [1] * 3 + [2] * 1)
    taken, rest = dataset.stratified_take(np.arange(10), strata, 5, np.random.default_rng(0))
    assert np.bincount(strata[taken], minlength=3).tolist() == [3, 2, 0]
    assert sorted([*taken, *rest]) == list(range(10))
    one, none = dataset.stratified_take(np.array([7]), np.array([0]), 1, np.random.default_rng(0))
    assert one.tolist() == [7] and none.tolist() == []


def test_the_split_of_a_fixed_table_is_pinned(tmp_path):
    """Which face goes where is part of every committed number: the same seed and sizes
    must draw the same faces on any machine and after any refactoring (pinned from the
    code of 2026-12-07: a deliberate change of the draw updates it, and says so). The
    summary describes each split by hand: val's 3 faces, their mean age and women."""
    faces = [(utk(5 + (i * 7) % 80, (i // 3) % 2, i), f"{i:064x}") for i in range(40)]
    table = _table(tmp_path, faces)
    dataset.split(table, P.Data("faces.tar.gz", 32, 20, 3, 10, False), seed=0)
    letter = {"train": "r", "val": "v", "test": "t", "unused": "u"}
    got = "".join(letter[s] for (s,) in table.rows("SELECT split FROM faces ORDER BY pos"))
    assert got == PINNED_SPLIT
    summary = dataset.summarize(table, "faces.tar.gz")
    val = summary["splits"]["val"]
    names = [n for (n,) in table.rows("SELECT name FROM faces WHERE split = 'val'")]
    ages, women = ([int(n.split("_")[k]) for n in names] for k in (0, 1))
    assert val["n"] == 3 and summary["files"] == 40 and val["race"] == {"White": 3}
    assert val["age_mean"] == round(sum(ages) / 3, 2) and val["female_fraction"] == round(
        sum(women) / 3, 4
    )
    assert 0 < sum(women) < 3 and sum(ages) % 3  # thirds: the rounding shows
    assert summary["status"] == {
        "ok": 40,
        "malformed": 0,
        "duplicate": 0,
        "conflict": 0,
        "unreadable": 0,
    }
    table.close()


PINNED_SPLIT = "tturrvvuttrtrurruutrrrtrurrrurutrrturuvt"
