"""Scratch project folders for the benchmarks that run stages: params.yaml with a few
changes, and this checkout's code on the path (`python -m stages.NAME` from any folder)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import yaml

from agegender.typed_yaml import set_dotted

ROOT = Path(__file__).resolve().parents[1]


def write_params(folder: Path, changes: dict[str, object], base: dict | None = None) -> None:
    """`folder`/params.yaml: this checkout's params.yaml (or `base`) with dotted changes, as
    `dvc exp run -S key=value` makes them."""
    raw = copy.deepcopy(base) if base else yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in changes.items():
        set_dotted(raw, f"{key}={json.dumps(value)}")
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def checkout_env() -> dict[str, str]:
    """The environment for a stage run from a scratch folder: this checkout first on the path."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
