"""The real pipeline (`dvc repro`) in a scratch git repo, on a small sample.

Used by tests/test_pipeline.py and by CI (`python -m tests.pipeline`): copies the
project's tracked files into a new repo, points data.raw at the real archive when
../shared has it (a synthetic one otherwise), shrinks the params, runs `dvc repro` and
checks every declared output.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from agegender import params as P
from agegender.layout import SHIFTS
from agegender.models import tfjs_graph
from agegender.models.backbones import PRETRAINED
from agegender.typed_yaml import set_dotted
from scripts.repo import ENV, git, sh
from tests.synthetic import write_archive

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_ARCHIVE = SHARED / "datasets" / "UTKFace.tar.gz"

SAMPLE = [  # CI's sample: tiny but real settings, every stage exercised
    "data.image_size=64",
    "data.subset_size=300",
    "data.val_size=100",
    "data.test_size=100",
    "train.deterministic=false",
    "model_a.fit.epochs=2",
    "model_b.phase1.epochs=1",
    "model_b.phase2.epochs=1",
    "model_b.phase2.warmup_epochs=0",
    "model_b.phase2.unfreeze=20",
    "model_a.teacher=model_b",  # the distillation path (stage teach) runs in CI too
    "report.worst_faces=4",
]


def make_repo(
    dest: Path, overrides: list[str], real: bool | None = None, shared_cache: Path | None = None
) -> Path:
    """A fresh git + DVC repo at dest with the project's code and a small sample; with
    `shared_cache`, set up as README's team server: that cache folder, group-shared, outputs
    hard- or symlinked into the workspace instead of copied."""
    tracked = sh("git", "ls-files", cwd=ROOT).stdout.split()
    skip = ("dvc.lock", "reports/", "data/raw/")
    keep = (str(SHIFTS),)  # a report input in git, not a stage's output (scripts/shifts.py)
    for name in tracked:
        if (name in keep or not name.startswith(skip)) and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    (dest / "data" / "raw").mkdir(parents=True, exist_ok=True)
    use_real = REAL_ARCHIVE.exists() if real is None else real
    if use_real:
        archive = dest / "data" / "raw" / "UTKFace.tar.gz"
        if REAL_ARCHIVE.stat().st_dev == dest.stat().st_dev:
            os.link(REAL_ARCHIVE, archive)  # 90 MB: a hard link when the disk allows
        else:
            shutil.copy(REAL_ARCHIVE, archive)
    else:
        archive = write_archive(dest / "data" / "raw" / "synthetic.tar.gz", n=600)
    raw = yaml.safe_load((dest / "params.yaml").read_text())
    for assignment in [f"data.raw={archive.relative_to(dest)}", *overrides]:
        set_dotted(raw, assignment)
    if raw["model_b"]["weights"] in PRETRAINED and not _weights_cached():
        raw["model_b"]["weights"] = None  # offline with no cached weights: random init
        raw["model_b"]["head_init"] = "random"
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    P.load(dest / "params.yaml")
    git("init", "-q", cwd=dest)
    if shared_cache is not None:  # per clone (.dvc/config.local): a clone of it has its own
        sh("dvc", "cache", "dir", "--local", str(shared_cache), cwd=dest)
        sh("dvc", "config", "--local", "cache.shared", "group", cwd=dest)
        sh("dvc", "config", "--local", "cache.type", "hardlink,symlink", cwd=dest)
    sh("dvc", "add", "-q", str(archive.relative_to(dest)), cwd=dest)  # as the real project does
    git("add", "-A", cwd=dest)
    git("commit", "-qm", "sample", cwd=dest)
    return dest


def _weights_cached() -> bool:
    """Copy ../shared's weights into Keras's cache (KERAS_HOME) if there; True when the
    default backbone's are cached (the face MobileNet's two files)."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    for weights in [*(SHARED / "weights").glob("*.h5"), *(SHARED / "weights").glob("*/*-*.*")]:
        cache.mkdir(parents=True, exist_ok=True)
        if weights.suffix in (".h5", ".json", ".bin") and not (cache / weights.name).exists():
            shutil.copy(weights, cache / weights.name)
    return all((cache / name).is_file() for name in tfjs_graph.SHA256)


def dvc_stages(repo: Path) -> dict[str, dict]:
    """dvc.yaml's stages as DVC runs them: a `foreach` stage becomes one per item (name@key)."""
    found = {}
    for name, spec in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in spec:
            found[name] = spec
            continue
        for key, item in spec["foreach"].items():
            text = yaml.safe_dump(spec["do"]).replace("${key}", key).replace("${item}", item)
            found[f"{name}@{key}"] = yaml.safe_load(text)
    return found


def declared_outputs(repo: Path) -> list[Path]:
    """Every out, metric and plot file the stages of dvc.yaml declare."""
    paths = []
    for stage in dvc_stages(repo).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                paths.append(repo / (entry if isinstance(entry, str) else next(iter(entry))))
    return paths


def check_outputs(repo: Path) -> dict:
    """All declared outputs exist; every score evaluate wrote is finite. Returns the scores."""
    missing = [str(p.relative_to(repo)) for p in declared_outputs(repo) if not p.exists()]
    assert not missing, f"declared outputs missing: {missing}"
    compared = json.loads((repo / "reports" / "metrics.json").read_text())
    assert list(compared) == ["A", "B", "AB"], compared
    metrics = json.loads((repo / "reports" / "eval" / "scores_flip.json").read_text())
    assert set(metrics) == {"model_a", "model_b", "ensemble"}
    for model, splits in metrics.items():
        for split, values in splits.items():
            for key, value in values.items():
                ok = value is not None and math.isfinite(value)
                assert ok or (key == "gender_auc" and value is None), (
                    f"{model}.{split}.{key}={value}"
                )
    return metrics


def main() -> None:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agegender-sample-") as tmp:
        os.environ.setdefault("KERAS_HOME", str(Path(tmp) / "keras"))
        repo = make_repo(Path(tmp) / "repo", SAMPLE)
        data = "real UTKFace" if REAL_ARCHIVE.exists() else "synthetic faces"
        print(f"sample pipeline: dvc repro on {data} ({', '.join(SAMPLE)})", flush=True)
        result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=ENV)
        if result.returncode != 0:
            sys.exit("sample pipeline: dvc repro failed")
        metrics = check_outputs(repo)
        print(sh("dvc", "metrics", "show", cwd=repo).stdout)
        status = sh("dvc", "status", cwd=repo).stdout
        assert "up to date" in status, status
        val = {m: metrics[m]["val"] for m in metrics}
        summary = ", ".join(
            f"{m} gender {v['gender_accuracy']:.2f} age MAE {v['age_mae']:.1f}"
            for m, v in val.items()
        )
        print(f"sample pipeline: ok in {time.monotonic() - start:.0f}s; val: {summary}")


if __name__ == "__main__":
    main()
