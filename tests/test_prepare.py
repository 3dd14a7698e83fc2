import json
import shutil

import numpy as np
import pandas as pd
import pytest

from agegender.data import load_split
from agegender.errors import UserError
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
