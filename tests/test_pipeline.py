"""`dvc repro` end to end in a scratch git repo, then the DVC commands a user runs."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.ci_summary import keep_sample
from scripts.repo import ENV, git, sh, share_roundtrip
from tests.pipeline import SAMPLE, check_outputs, declared_outputs, make_repo


@pytest.mark.slow
def test_dvc_repro_metrics_and_status(tmp_path, monkeypatch):
    """The pipeline as README's team server runs it: one cache folder, group-shared,
    outputs linked into the workspace; then the DVC commands a user runs."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    overrides = [
        *SAMPLE,
        "data.image_size=32",
        "model_a.stem_stride=2",
        "model_a.fit.epochs=1",
        "train.deterministic=true",
    ]
    cache = tmp_path / "team-cache"
    repo = make_repo(tmp_path / "repo", overrides, shared_cache=cache)  # real data if there
    sh("dvc", "repro", cwd=repo)
    metrics = check_outputs(repo)
    assert metrics["model_a"]["val"]["n"] == 100
    if os.environ.get("SAMPLE_DIR"):  # CI: the job summary reads this run's metrics
        keep_sample(repo, Path(os.environ["SAMPLE_DIR"]), overrides)

    # Same params, same bytes: a forced rerun gives the same md5 for every output in
    # dvc.lock (models, report, charts and tables included: no time or date in any of them).
    first = out_hashes(repo)
    assert any(path.endswith(".keras") for path in first) and len(first) > 20
    sh("dvc", "repro", "--force", cwd=repo)
    second = out_hashes(repo)
    changed = sorted(p for p in first if second.get(p) != first[p])
    assert not changed and first.keys() == second.keys(), changed
    shared_cache_is_intact(repo, cache)
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo).stdout)
    keys = json.dumps(shown)
    for key in ("val_acc", "test_mae", '"A"', '"B"', '"AB"'):
        assert key in keys
    assert "up to date" in sh("dvc", "status", cwd=repo).stdout
    assert "Stage 'prepare' didn't change" in sh("dvc", "repro", cwd=repo).stdout

    git("add", "-A", cwd=repo)
    git("commit", "-qm", "results", cwd=repo)
    a_failed_run_keeps_every_output(repo)
    readme_experiments(repo)
    tune_trials_are_experiments(repo)
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


README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def readme_command(start: str) -> str:
    """The README's command line (in "The DVC loop") that starts with `start`, without its
    comment: the test runs what a user copies."""
    block = README.split("## The DVC loop", 1)[1].split("```", 2)[1]
    line = next(line for line in block.splitlines() if line.startswith(start))
    return line.split("  #", 1)[0].strip()


def tune_trials_are_experiments(repo) -> None:
    """scripts/tune.py as the README runs it: each trial a DVC experiment holding its
    params.yaml and val score, the workspace left as committed, a rerun that continues the
    study on the backbone features the first run kept, and `dvc exp apply` of a trial that
    leaves train_b to retrain (dvc.lock is HEAD's in every trial: nothing claims a model the
    trial's params never trained)."""
    before = {name: (repo / name).read_bytes() for name in ("params.yaml", "dvc.lock")}
    tune = [sys.executable, "scripts/tune.py", "model_b", "--trials"]
    first = subprocess.run([*tune, "2"], cwd=repo, env=ENV, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "trial 0:" in first.stdout and "trial 1:" in first.stdout
    assert {name: (repo / name).read_bytes() for name in before} == before
    assert sh("git", "status", "--porcelain", cwd=repo).stdout == ""
    again = subprocess.run([*tune, "3"], cwd=repo, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0 and "trial 2:" in again.stdout and "trial 0:" not in again.stdout
    assert "backbone features from reports/tune/.features/" in again.stdout  # not recomputed
    ref = f"refs/exps/{experiment_ref(repo, 'tune-model_b-001')}"
    assert sh("git", "show", f"{ref}:dvc.lock", cwd=repo).stdout == before["dvc.lock"].decode()
    trial = yaml.safe_load(sh("git", "show", f"{ref}:params.yaml", cwd=repo).stdout)
    shown = sh("dvc", "exp", "show", "--json", cwd=repo).stdout
    assert "tune-model_b-001" in shown and '"score"' in shown
    sh("dvc", "exp", "apply", "tune-model_b-001", cwd=repo)
    applied = yaml.safe_load((repo / "params.yaml").read_text())
    assert applied["model_b"]["dropout"] == trial["model_b"]["dropout"] != 0.3
    assert "train_b" in sh("dvc", "status", cwd=repo).stdout  # to retrain, not "up to date"
    sh("git", "checkout", "params.yaml", cwd=repo)
    sh("git", "clean", "-fdq", "reports/tune", cwd=repo)
    (repo / "reports/tune/model_b.db").unlink()  # a new study: its trial names are taken
    fresh = subprocess.run([*tune, "1"], cwd=repo, env=ENV, capture_output=True, text=True)
    assert fresh.returncode != 0 and "dvc exp remove" in fresh.stderr  # names held: refused
    assert not (repo / "reports/tune/model_b").exists()


def readme_experiments(repo) -> None:
    """README's experiment commands, as a user runs them: a failed `--temp` experiment
    leaves params.yaml as it was; two started at once keep their own records; the README's
    `dvc exp show` shows the val metrics in 120 columns."""
    pattern = readme_command("dvc exp run --temp")
    assert pattern.startswith("dvc exp run --temp -n ")

    def experiment(name: str, value: str) -> list[str]:
        return ["dvc", "exp", "run", "--temp", "-n", name, "-S", value]

    failed = sh(*experiment("bad", "model_a.fit.epochs=-1"), cwd=repo, check=False)
    assert failed.returncode != 0 and "model_a.fit.epochs" in failed.stdout + failed.stderr
    assert sh("git", "status", "--porcelain", cwd=repo).stdout == ""  # params.yaml as it was
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dvc",
                "--wait-for-lock",  # DVC's lock: 3 s, then fail
                *experiment(f"boot-{n}", f"evaluate.bootstrap={n}")[1:],
            ],
            cwd=repo,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for n in (150, 160)
    ]
    for run in runs:
        out, _ = run.communicate(timeout=900)
        assert run.returncode == 0, out
    assert sh("git", "status", "--porcelain", cwd=repo).stdout == ""
    for n in (150, 160):  # each record: its params, its lock, and its intervals agree
        ref = f"refs/exps/{experiment_ref(repo, f'boot-{n}')}"
        lock = yaml.safe_load(sh("git", "show", f"{ref}:dvc.lock", cwd=repo).stdout)
        assert lock["stages"]["evaluate"]["params"]["params.yaml"]["evaluate.bootstrap"] == n
        trust = json.loads(sh("git", "show", f"{ref}:reports/eval/trust.json", cwd=repo).stdout)
        assert trust["intervals"]["resamples"] == n
    show = readme_command("dvc exp show").replace("dvc", f"{sys.executable} -m dvc", 1)
    table = subprocess.run(
        show, shell=True, cwd=repo, env={**ENV, "COLUMNS": "120"}, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    header = next(line for line in table.splitlines() if "Experiment" in line)
    assert "…" not in header, table  # rich fits the table to COLUMNS
    for name in ("A.val_acc", "A.val_mae", "B.val_acc", "B.val_mae", "AB.val_mae", "seed"):
        assert name in header, table
    assert "boot-150" in table and "boot-160" in table


def experiment_ref(repo, name: str) -> str:
    """The path under refs/exps of the experiment called `name`."""
    refs = sh("git", "for-each-ref", "--format=%(refname)", "refs/exps", cwd=repo).stdout.split()
    return next(ref for ref in refs if ref.endswith(f"/{name}")).removeprefix("refs/exps/")


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


def shared_cache_is_intact(repo, cache) -> None:
    """Outputs are replaced, never written through a link: after a forced rerun every
    cached file still holds the bytes its name (their md5) says."""
    objects = [f for f in (cache / "files" / "md5").rglob("*") if f.is_file()]
    assert len(objects) > 10
    for obj in objects:
        digest = hashlib.md5(obj.read_bytes()).hexdigest()
        assert obj.parent.name + obj.name.removesuffix(".dir") == digest, obj
    model = repo / "models" / "age_gender_A.keras"
    assert model.is_symlink() or model.stat().st_nlink > 1  # linked from the cache, not copied
