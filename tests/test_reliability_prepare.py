"""Issue 14, prepare side: bad input and interruptions end in one clear line, or are handled,
and never leave wrong or half-written outputs behind."""

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agegender import files
from agegender import params as P
from agegender.errors import UserError
from agegender.files import atomic_path, clean_stale_temps, write_text
from agegender.prepare import archive, decoding, store
from agegender.prepare.archive import read_source
from agegender.prepare.table import FileTable
from stages import prepare
from tests.conftest import ROOT, SMALL, md5s, write_params
from tests.synthetic import draw_face, faces, jpeg

FACE = jpeg(draw_face(30, 1, np.random.default_rng(0)))
NAME = "30_1_0_20170101000000000.jpg.chip.jpg"


def _tar(path: Path, files: list[tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files:
            info = tarfile.TarInfo(f"UTKFace/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# --- 1. a damaged archive stops, it does not give a smaller dataset ---------------------------


def test_flipped_bytes_in_a_gzip_archive_stop_prepare(tmp_path, synthetic_archive):
    data = bytearray(synthetic_archive.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(data)
    with pytest.raises(UserError, match=f"{broken}: (broken|damaged) archive"):
        list(read_source(broken))


def test_a_junk_header_in_a_plain_tar_is_not_taken_for_its_end(tmp_path):
    archive = _tar(tmp_path / "u.tar", [(f"{i}_0_0_20170101000000000.jpg", FACE) for i in range(6)])
    data = bytearray(archive.read_bytes())
    third = 2 * (512 + -(-len(FACE) // 512) * 512)  # start of the third member's header
    data[third : third + 512] = b"\x07" * 512
    archive.write_bytes(data)
    with pytest.raises(UserError, match="damaged archive: unreadable after its first 2 members"):
        list(read_source(archive))


# --- 2. an interrupted prepare keeps the previous run's outputs, all of them ------------------


def test_interrupt_while_writing_keeps_the_old_set(project, monkeypatch):
    prepare.main()
    out = project / "data" / "prepared"
    before = md5s(out)
    write_params(project, [*SMALL, "seed=7"])

    def interrupted(path, text):
        if Path(path).name == "summary.json":
            raise KeyboardInterrupt
        write_text(path, text)

    monkeypatch.setattr(store, "write_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare.main()
    assert md5s(out) == before
    assert sorted(p.name for p in (project / "data").iterdir()) == ["prepared", "raw"]


def test_signals_wait_until_the_new_set_is_in(tmp_path, monkeypatch):
    out, staging = tmp_path / "out", tmp_path / "staging"
    for folder, text in ((out, "old"), (staging, "new")):
        folder.mkdir()
        for name in store.OUTPUTS:
            (folder / name).write_text(text)
    replace = os.replace

    def ctrl_c_midway(src, dst):
        os.kill(os.getpid(), signal.SIGINT)
        replace(src, dst)

    monkeypatch.setattr(files.os, "replace", ctrl_c_midway)
    with pytest.raises(KeyboardInterrupt):
        files.publish({staging / name: out / name for name in store.OUTPUTS})
    assert {(out / name).read_text() for name in store.OUTPUTS} == {"new"}


# --- 3. nothing outlives a killed prepare --------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
def test_workers_die_with_a_killed_parent():
    script = (
        "import os, time\n"
        "from agegender.prepare.decoding import worker_pool\n"
        "pool = worker_pool(2)\n"
        "pool.submit(os.getpid).result()\n"
        "print(*pool._processes, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(workers) == 2
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    gone = subprocess.Popen(["true"])  # a pid that no longer runs
    gone.wait()
    dead, live = gone.pid, os.getpid()
    stale = [f".train.{dead}.k2x_9abc.npz", f".age_gender_A.{dead}.a1b2c3d4.keras"]
    kept = ["train.npz", ".train.npz", ".train.mine.npz", f".val.{dead}.k2x_9abc.npz",
            "x.k2x_9abc.npz", f".train.{live}.k2x_9abc.npz"]  # fmt: skip
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    with atomic_path(tmp_path / "train.npz") as tmp:
        tmp.write_bytes(b"new")
    clean_stale_temps(tmp_path / "age_gender_A.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert (tmp_path / "train.npz").read_bytes() == b"new"


def test_a_killed_runs_staging_folder_is_removed(project):
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = project / "data" / f".prepared.{gone.pid}.abcd1234"
    stale.mkdir(parents=True)
    (stale / "train.npz").write_bytes(b"half")
    prepare.main()
    assert not stale.exists()


# --- 4. outputs get the umask's mode -------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode


# --- 5. odd input: one line, or handled ---------------------------------------------------------


def test_empty_raw_path_is_rejected(tmp_path):
    with pytest.raises(P.ParamsError, match="data.raw: is empty"):
        write_params(tmp_path, ['data.raw=""'])


def test_non_utf8_names_are_kept_printable(tmp_path):
    raw = b"50_1_0_20170101000000000\xff.jpg.chip.jpg"
    name = raw.decode("utf-8", "surrogateescape")
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    (folder / name).write_bytes(FACE)
    archive = _tar(tmp_path / "u.tar", [(name, FACE)])
    for source in (folder, archive):
        assert [m.name for m in read_source(source)] == [
            "50_1_0_20170101000000000\\xff.jpg.chip.jpg"
        ]


def test_a_zip_name_flagged_utf8_that_is_not_is_one_line(tmp_path):
    archive = tmp_path / "u.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("é.jpg", FACE)
    archive.write_bytes(archive.read_bytes().replace("é".encode(), b"\xff\xff"))
    with pytest.raises(UserError, match="a member name is not UTF-8"):
        list(read_source(archive))


@pytest.mark.parametrize(
    ("flag", "method", "problem"),
    [(1, 8, "encrypted zip member"), (0, 9, "zip compression method 9 not supported")],
)
def test_unreadable_zip_members_are_marked(tmp_path, flag, method, problem):
    archive = tmp_path / "u.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(NAME, FACE)
    data = bytearray(archive.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= flag
    data[central + 10 : central + 12] = method.to_bytes(2, "little")
    archive.write_bytes(data)
    [member] = read_source(archive)
    assert (member.name, member.data) == (NAME, b"") and problem in member.problem


def test_symlinked_faces_are_read(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "blob").write_bytes(FACE)
    (tmp_path / "UTKFace").mkdir()
    (tmp_path / "UTKFace" / NAME).symlink_to(tmp_path / "store" / "blob")
    (tmp_path / "UTKFace" / "dangling.jpg").symlink_to(tmp_path / "nowhere")
    assert [(m.name, m.data) for m in read_source(tmp_path / "UTKFace")] == [(NAME, FACE)]


def test_oversized_and_odd_members_end_up_in_faces_csv(project, monkeypatch):
    monkeypatch.setattr(archive, "MAX_FILE_BYTES", 2**20)
    odd = b"50_1_0_20170101000000000\xff.jpg.chip.jpg".decode("utf-8", "surrogateescape")
    files = [*faces(420), (odd, FACE), ("60_0_0_20170101000000000.jpg.chip.jpg", FACE * 500)]
    formulas = ['=HYPERLINK("x").jpg', "+1_0_0_2017.jpg", "@SUM(A1).jpg", "-2.jpg"]
    files += [(name, FACE) for name in formulas]
    _tar(project / "data" / "raw" / "odd.tar.gz", files, "w:gz")
    write_params(project, [*SMALL, "data.raw=data/raw/odd.tar.gz"])
    prepare.main()
    rows = pd.read_csv(project / "data/prepared/faces.csv", keep_default_na=False).set_index("name")
    assert rows.loc["50_1_0_20170101000000000\\xff.jpg.chip.jpg", "status"] == "ok"
    big = rows.loc["60_0_0_20170101000000000.jpg.chip.jpg"]
    assert big.status == "unreadable" and "over the 1 MB limit" in big.reason and not big.sha256
    assert "cannot be decoded" in rows.loc["35_0_0_20170101000000097.jpg.chip.jpg", "reason"]
    names = set(rows.index)  # a spreadsheet opening faces.csv runs no formula from a name
    assert {"'" + name for name in formulas} <= names and not names & set(formulas)


def test_faces_csv_is_written_as_pandas_writes_it(project):
    """prepare streams faces.csv row by row; readers get what pandas' to_csv would give,
    quotes, commas, line breaks and missing labels included."""
    odd = ["30_1_0_2017010100000001,a.jpg", '31_0_1_20170101000000002".jpg', "32_1_2_2017é.jpg"]
    odd += ["33_0_0_2017\n.jpg", "nolabel.jpg"]
    _tar(project / "data" / "raw" / "odd.tar", [*faces(420), *((n, FACE) for n in odd)])
    write_params(project, [*SMALL, "data.raw=data/raw/odd.tar"])
    prepare.main()
    written = (project / "data/prepared/faces.csv").read_text()
    header, *rows = csv.reader(io.StringIO(written))
    table = pd.DataFrame(rows, columns=header)
    for column in ("age", "gender"):
        table[column] = pd.array([int(v) if v else None for v in table[column]], dtype="Int64")
    table["race"] = table.race.astype(int)
    assert set(odd) <= set(table.name) and table.set_index("name").age.isna()["nolabel.jpg"]
    assert table.to_csv(index=False, lineterminator="\n") == written


def test_a_full_disk_while_building_the_table_is_one_line(project, monkeypatch):
    def full(self, files):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(FileTable, "add", full)
    with pytest.raises(UserError, match=r"^cannot write data/prepared: no space left on the"):
        prepare.main()
    assert sorted(p.name for p in (project / "data").iterdir()) == ["prepared", "raw"]


def test_an_archive_that_changes_between_the_passes_stops_prepare(project, monkeypatch):
    """The second pass finds the faces the split chose by name and hash; any gone means the
    archive changed under prepare, and nothing is published."""
    read = decoding.read_source
    passes = []

    def shrinking(source):
        passes.append(source)
        members = list(read(source))
        return iter(members if len(passes) == 1 else members[: len(members) // 2])

    monkeypatch.setattr(decoding, "read_source", shrinking)
    with pytest.raises(
        UserError, match=r"changed while prepare read it \(\d+ of the faces it chose"
    ):
        prepare.main()
    assert not (project / "data" / "prepared" / "train").exists()


def test_prepare_errors_are_one_line(project):
    write_params(project, [*SMALL, "data.raw=data/raw/nothing.tar.gz"])
    result = subprocess.run(
        [sys.executable, "-m", "stages.prepare"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # stages/ runs from the repository root
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: data/raw/nothing")


def test_an_archive_with_no_usable_face_says_so(project):
    archive = _tar(project / "data" / "raw" / "bad.tar", [("nolabel.jpg", FACE), ("x_y.jpg", FACE)])
    write_params(project, [*SMALL, f"data.raw={archive.relative_to(project)}"])
    with pytest.raises(UserError, match=r"bad.tar: holds no usable face \(2 files: malformed 2\)"):
        prepare.main()


def test_a_read_only_output_folder_is_one_line(project):
    if os.geteuid() == 0:  # root writes anywhere: emulate the read-only file system
        pytest.skip("running as root: permissions do not stop writes")
    (project / "data").chmod(0o555)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "stages.prepare"], cwd=project, capture_output=True,
            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    finally:
        (project / "data").chmod(0o755)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-500:]
    assert "permission denied" in result.stderr


def test_write_failures_name_the_path_and_cause(tmp_path):
    import errno

    from agegender.errors import write_failure

    causes = {
        errno.ENOSPC: "no space left",
        errno.EROFS: "the file system is read-only",
        errno.EFBIG: "file too large",
    }
    for code, cause in causes.items():
        failure = write_failure(OSError(code, os.strerror(code)), tmp_path / "out.npy")
        assert str(failure).startswith(f"cannot write {tmp_path / 'out.npy'}: {cause}")
    with (
        pytest.raises(UserError, match="cannot write .*out.txt: file too large"),
        atomic_path(tmp_path / "out.txt") as tmp,
    ):
        raise OSError(errno.EFBIG, "File too large", str(tmp))


def test_a_file_size_limit_stops_prepare_in_one_line(project):
    """`ulimit -f`: writes past the limit fail with EFBIG (Python ignores SIGXFSZ)."""
    result = subprocess.run(
        ["bash", "-c", f"ulimit -f 200; exec {sys.executable} -m stages.prepare"],
        cwd=project, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-800:]
    errors = [ln for ln in result.stderr.splitlines() if ln and not ln.startswith("prepare:")]
    assert errors == [errors[0]] and errors[0].startswith("error: cannot write data/prepared: ")
    assert "ulimit -f" in errors[0] and "Traceback" not in result.stderr


# --- memory stays bounded whatever the archive (issue 21) --------------------------------------


def _peak_rss_mb_of(command: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command; its result and the peak resident memory of it and its workers, MB.

    Measured by a fresh wrapper interpreter: getrusage(RUSAGE_CHILDREN) keeps the largest
    child a process ever waited for, so this test process's earlier children would count.
    """
    wrapper = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(done.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(done.returncode)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *command], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return result, int(result.stdout.split()[-1]) / 1024


def test_huge_members_do_not_add_up_in_memory(project):
    """48 members of 19 MB of zeros (900 MB unpacked, 1 MB packed): the old prepare held every
    member and a copy of it at once; a stream holds a few chunks of 64 MB at most."""
    archive = project / "data" / "raw" / "zeros.zip"
    zeros = b"\0" * (19 << 20)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(48):
            zf.writestr(f"UTKFace/{20 + i}_0_0_2017010100000{i:04d}.jpg", zeros)
    write_params(project, [*SMALL, f"data.raw={archive.relative_to(project)}"])
    result, peak = _peak_rss_mb_of([sys.executable, "-m", "stages.prepare"], project)
    assert (
        result.returncode == 2 and "holds no usable face (48 files: unreadable 48)" in result.stderr
    )
    assert peak < 500, f"peak memory {peak:.0f} MB for 900 MB of members"


def test_a_size_whose_arrays_do_not_fit_the_disk_is_one_line(project, monkeypatch):
    write_params(project, [*SMALL, "data.image_size=512"])
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: type("U", (), {"free": 2**28})())
    with pytest.raises(UserError, match=r"400 faces of 512 px need 0.3 GiB on disk, 0.2 GiB are"):
        prepare.main()
