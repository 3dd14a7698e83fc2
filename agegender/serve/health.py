"""What agegender-serve's /health says: the models, the commit they came from (the checkout
whose committed dvc.lock records these very files), the range level, versions and limits."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict
from pathlib import Path

import yaml

from agegender import environment
from agegender.files import md5
from agegender.layout import CALIBRATION
from agegender.serve.api import Analyzer, find, project
from agegender.serve.limits import Limits


def provenance(root: Path | None, files: list[str]) -> dict:
    """The commit the served models came from: the checkout's HEAD when its committed
    dvc.lock records these very files (by md5); None otherwise, with why."""
    out: dict = {"commit": None}
    if root is None:
        return out | {"why": "no project folder"}
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return out | {"why": "no readable dvc.lock beside the models"}
    recorded = {
        str(item.get("path")): item.get("md5")
        for stage in (lock.get("stages") or {}).values()
        for item in (stage or {}).get("outs") or []
    }
    for file in files:
        relative = Path(file).resolve().relative_to(root.resolve()).as_posix()
        if recorded.get(relative) != md5(Path(file)):
            return out | {"why": f"{relative} is not the model dvc.lock records (retrained?)"}

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "HEAD")
    if not head:
        return out | {"why": "the project folder is not a git checkout"}
    if git("status", "--porcelain", "--", "dvc.lock"):
        return out | {"why": "dvc.lock differs from the commit (not committed yet)"}
    return {"commit": head}


def range_level() -> float | None:
    """The level evaluate fitted the age ranges at (calibration.json's), for the page."""
    path = find(CALIBRATION)
    try:
        return float(json.loads(path.read_text())["level"]) if path else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def health_of(analyzers: dict[str, Analyzer], default: str, limits: Limits) -> dict:
    files = sorted({str(f) for a in analyzers.values() for f in a.files})
    root = project()
    return {
        "status": "ok",
        "models": {name: {"files": a.files, "sides": a.sizes} for name, a in analyzers.items()},
        "default_model": default,
        "project": str(root) if root else None,
        "provenance": provenance(root, files),
        "range_level": range_level(),
        "versions": {"python": platform.python_version(), **environment.versions()},
        "limits": asdict(limits),
    }
