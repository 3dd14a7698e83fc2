"""dvc.yaml's deps follow from the imports: editing any module a stage runs reruns that stage.

The imports are read from the source (every `import`, also those inside functions), so a
lazy import cannot hide a dependency from DVC.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.pipeline import dvc_stages

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agegender", "stages")


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None for other packages."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names a file imports, anywhere in it, with `from x import y` tried as x.y too."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .y import z
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(start: Path) -> set[Path]:
    """The project files a module runs: itself, what it imports, and their packages' __init__."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__
                found = module_file(".".join(parts[:i]))
                if found is not None:
                    todo.append(found)
    return seen


def stages() -> dict[str, dict]:
    return dvc_stages(ROOT)


def needed(spec: dict) -> set[str]:
    """The project files a stage's command runs, as dvc.yaml spells deps."""
    entry = module_file(spec["cmd"].removeprefix("python -m ").split()[0])
    assert entry is not None, f"cmd {spec['cmd']!r} is not `python -m stages.NAME`"
    files = {str(p.relative_to(ROOT)) for p in closure(entry)}
    return files - {"stages/__init__.py"}  # its docstring only; nothing a stage computes


@pytest.mark.parametrize("stage", sorted(stages()))
def test_deps_cover_every_module_the_stage_imports(stage):
    spec = stages()[stage]
    missing = sorted(needed(spec) - set(spec["deps"]))
    assert not missing, f"dvc.yaml stage {stage}: add to deps {missing}"


@pytest.mark.parametrize("stage", sorted(stages()))
def test_deps_name_no_module_the_stage_does_not_import(stage):
    """A stale dep reruns a stage for nothing (and hides which files really matter)."""
    spec = stages()[stage]
    stale = sorted({d for d in spec["deps"] if d.endswith(".py")} - needed(spec))
    assert not stale, f"dvc.yaml stage {stage}: drop {stale}"


def test_the_closure_follows_lazy_imports():
    """An import inside a function counts: it runs when the stage calls that function."""
    found = imported_modules(ROOT / "agegender" / "serve" / "faces.py")
    assert "tensorflow" in found  # faces.py imports TensorFlow only inside a method


def test_artifacts_are_the_trained_models():
    """dvc.yaml's `artifacts:` name each model a training stage writes, as type model."""
    from agegender.layout import TRAINED

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    artifacts = spec["artifacts"]
    assert {a["path"] for a in artifacts.values()} == {m.file.as_posix() for m in TRAINED.values()}
    outs = {
        o if isinstance(o, str) else next(iter(o))
        for stage in spec["stages"].values()
        for o in stage.get("outs", [])
    }
    for name, artifact in artifacts.items():
        assert artifact["type"] == "model" and artifact["desc"] and artifact["labels"], name
        assert artifact["path"] in outs, name


@pytest.mark.parametrize(
    ("module", "stages_that_run_it"),
    [
        ("agegender/models/model_a.py", {"train_a"}),  # model A's builder: never retrains B
        ("agegender/models/model_b.py", {"train_b"}),  # model B's builder: never retrains A
        ("agegender/models/backbones.py", {"train_b", "report"}),  # adding a backbone
        ("agegender/prepare/archive.py", {"prepare"}),  # the archive reader: never retrains
        ("agegender/images.py", {"prepare"}),
        ("agegender/prepare/store.py", {"prepare"}),
        ("agegender/evaluate/metrics.py", {"evaluate"}),
        ("agegender/evaluate/inference.py", {"predict@model_a", "predict@model_b", "report"}),
        ("agegender/report/comparison.py", {"report"}),  # a report section: the report only
    ],
)
def test_an_edit_reruns_only_the_stages_it_concerns(module, stages_that_run_it):
    """Modules are cut along the stages, so that a change reruns what it changes and no more
    (issue 23's acceptance; `dvc status` after an edit shows the same stages)."""
    assert {name for name, spec in stages().items() if module in needed(spec)} == (
        stages_that_run_it
    )
