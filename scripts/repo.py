"""Running DVC and git on this project from Python, for the tests (CI's sample pipeline) and
scripts/share_check.py; not part of the installed package, which never shells out to dvc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dvc.repo import Repo

from agegender.layout import TRAINED

# dvc.yaml's commands say `python -m stages...`: make that this interpreter, venv active or not.
ENV = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}


def sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in `cwd`; dvc through this Python, so the venv's dvc is the one used."""
    if args[0] == "dvc":
        args = (sys.executable, "-m", "dvc", *args[1:])
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=ENV)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def git(*args: str, cwd: Path) -> None:
    sh("git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", *args, cwd=cwd)


def share_roundtrip(repo: Path, work: Path) -> list[str]:
    """`dvc push` to a local remote, then `git clone` + `dvc pull` elsewhere.

    Checks that the clone gets byte-identical models and that `dvc repro` there runs
    nothing; returns the commands and their output, for the README and closing notes.
    The remote is added with --local (.dvc/config.local), so `repo` stays unchanged.
    """
    store, clone = work / "dvc-store", work / "clone"
    log: list[str] = []

    def run(*args: str, cwd: Path) -> str:
        out = sh(*args, cwd=cwd)
        text = (out.stdout + out.stderr).strip()
        log.append(f"$ {' '.join(args)}" + (f"\n{text}" if text else ""))
        return text

    run("dvc", "remote", "add", "--local", "-f", "share", str(store), cwd=repo)
    run("dvc", "push", "-r", "share", cwd=repo)
    run("git", "clone", "-q", str(repo), str(clone), cwd=work)
    run("dvc", "remote", "add", "--local", "share", str(store), cwd=clone)
    run("dvc", "pull", "-r", "share", cwd=clone)
    run("dvc", "status", cwd=clone)  # for the log; the check is the API's answer below
    with Repo(str(clone)) as dvc_repo:
        changed = dvc_repo.status()
    if changed:
        raise RuntimeError(f"dvc status in the clone after dvc pull: {changed}")
    repro = run("dvc", "repro", cwd=clone)
    if "Running stage" in repro:
        raise RuntimeError(f"dvc repro in the clone ran a stage:\n{repro}")
    for model in (m.file for m in TRAINED.values()):
        if (clone / model).read_bytes() != (repo / model).read_bytes():
            raise RuntimeError(f"{model.name} differs after dvc pull")
        log.append(f"# {model.name}: byte-identical in the clone")
    # The model registry: a version tag in GTO's format, then `dvc artifacts get`.
    git("tag", "-a", "age-gender-b@v0.1.0", "-m", "Registering age-gender-b v0.1.0", cwd=repo)
    got = work / "artifact.keras"
    run("dvc", "artifacts", "get", str(repo), "age-gender-b", "--remote-config",
        f"url={store}", "-o", str(got), cwd=work)  # fmt: skip
    if got.read_bytes() != (repo / TRAINED["model_b"].file).read_bytes():
        raise RuntimeError("dvc artifacts get: not the committed model B")
    log.append("# dvc artifacts get: the committed model B, byte-identical")
    sh("dvc", "remote", "remove", "--local", "share", cwd=repo)
    return log
