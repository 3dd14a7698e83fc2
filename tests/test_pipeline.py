"""`dvc repro` end to end in a scratch git repo, then the DVC commands a user runs."""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from scripts.repo import ENV, git, sh, share_roundtrip
from tests.pipeline import SAMPLE, check_outputs, declared_outputs, make_repo


@pytest.mark.slow
def test_dvc_repro_metrics_and_status(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    overrides = [
        *SAMPLE,
        "data.image_size=32",
        "model_a.stem_stride=2",
        "model_a.fit.epochs=1",
        "train.deterministic=true",
    ]
    repo = make_repo(tmp_path / "repo", overrides, real=False)
    sh("dvc", "repro", cwd=repo)
    metrics = check_outputs(repo)
    assert metrics["model_a"]["val"]["n"] == 100

    # Same params, same bytes: a forced rerun gives the same md5 for every output in
    # dvc.lock (models, report, charts and tables included: no time or date in any of them).
    first = out_hashes(repo)
    assert any(path.endswith(".keras") for path in first) and len(first) > 20
    sh("dvc", "repro", "--force", cwd=repo)
    second = out_hashes(repo)
    changed = sorted(p for p in first if second.get(p) != first[p])
    assert not changed and first.keys() == second.keys(), changed
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo).stdout)
    keys = json.dumps(shown)
    for key in ("val_acc", "test_mae", '"A"', '"B"', '"AB"'):
        assert key in keys
    assert "up to date" in sh("dvc", "status", cwd=repo).stdout
    assert "Stage 'prepare' didn't change" in sh("dvc", "repro", cwd=repo).stdout

    git("add", "-A", cwd=repo)
    git("commit", "-qm", "results", cwd=repo)
    a_failed_run_keeps_every_output(repo)
    committed = (repo / "reports" / "metrics.json").read_text()
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["evaluate"]["flip_tta"] = not raw["evaluate"]["flip_tta"]
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert "evaluate.flip_tta" in sh("dvc", "params", "diff", cwd=repo).stdout
    out = sh("dvc", "repro", cwd=repo).stdout
    assert "Running stage 'evaluate'" in out and "Running stage 'train_a'" not in out
    diff = sh("dvc", "metrics", "diff", cwd=repo).stdout
    if (repo / "reports" / "metrics.json").read_text() != committed:  # a model that predicts
        assert "reports/metrics.json" in diff and "_mae" in diff  # one value is flip-proof

    # Sharing: push to a local remote, clone, pull: same models, nothing to rerun.
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "evaluate without flip", cwd=repo)
    log = "\n".join(share_roundtrip(repo, tmp_path))
    assert "age_gender_A.keras: byte-identical" in log and "age_gender_B.keras" in log
    assert "dvc artifacts get: the committed model B, byte-identical" in log


def a_failed_run_keeps_every_output(repo) -> None:
    """Bad params, Ctrl-C and kill -9 during train_a: every output file keeps its bytes
    (outputs are `persist: true` and written atomically) and `dvc status` says what it said."""
    before = file_hashes(repo)
    params = repo / "params.yaml"
    good = params.read_text()
    raw = yaml.safe_load(good)
    raw["model_a"]["fit"]["epochs"] = -1
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    failed = sh("dvc", "repro", cwd=repo, check=False)
    assert failed.returncode != 0 and "model_a.fit.epochs" in failed.stdout + failed.stderr
    assert file_hashes(repo) == before
    raw["model_a"]["fit"]["epochs"] = 100  # long enough to be interrupted mid-training
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    for sig in (signal.SIGINT, signal.SIGKILL):
        command = [sys.executable, "-m", "dvc", "repro", "-s", "train_a"]
        run = subprocess.Popen(
            command, cwd=repo, env={**ENV, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        for line in run.stdout:  # wait until training has begun
            if "Epoch 2/" in line:
                break
        os.killpg(run.pid, sig)
        run.communicate(timeout=120)
        assert run.returncode != 0, sig
        assert file_hashes(repo) == before, f"{sig.name} changed outputs"
    params.write_text(good)
    assert "up to date" in sh("dvc", "status", cwd=repo).stdout


def file_hashes(repo) -> dict[str, str]:
    """{file: md5} of every file under the declared outputs (models, folders, reports)."""
    found = {}
    for out in declared_outputs(repo):
        for path in [out] if out.is_file() else sorted(out.rglob("*")):
            if path.is_file():
                found[str(path.relative_to(repo))] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def out_hashes(repo) -> dict[str, str]:
    """{output path: md5} of every stage's outs in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}


@pytest.mark.slow
def test_a_shared_cache_keeps_every_output_correct(tmp_path, monkeypatch):
    """README's team server: one cache folder, group-shared, outputs linked into the
    workspace. Outputs are replaced, never written through a link, so after a forced rerun
    every cached file still holds the bytes its name (their md5) says."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    overrides = [*SAMPLE, "data.image_size=32", "model_a.stem_stride=2", "model_a.fit.epochs=1"]
    cache = tmp_path / "team-cache"
    repo = make_repo(tmp_path / "repo", overrides, real=False, shared_cache=cache)
    sh("dvc", "repro", cwd=repo)
    sh("dvc", "repro", "--force", cwd=repo)
    objects = [f for f in (cache / "files" / "md5").rglob("*") if f.is_file()]
    assert len(objects) > 10
    for obj in objects:
        digest = hashlib.md5(obj.read_bytes()).hexdigest()
        assert obj.parent.name + obj.name.removesuffix(".dir") == digest, obj
    model = repo / "models" / "age_gender_A.keras"
    assert model.is_symlink() or model.stat().st_nlink > 1  # linked from the cache, not copied
    assert "up to date" in sh("dvc", "status", cwd=repo).stdout
