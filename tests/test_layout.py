"""The package's layout, enforced: who may import whom (agegender/__init__.py says why).

Read with `ast` from the source, lazy imports inside functions included, so a move that
breaks the rule fails here instead of slowly turning the folders into a tangle again.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "agegender"
SUBPACKAGES = ("prepare", "models", "training", "evaluate", "serve", "report", "shift")
# What each part may import besides itself. The core (the modules at the top of agegender/)
# serves every stage and imports no subpackage; serving and the report never reach into
# training, and preparing data knows nothing of models.
ALLOWED = {
    "core": set(),
    "prepare": {"core"},
    "models": {"core"},
    "training": {"core", "models"},
    "evaluate": {"core"},
    "serve": {"core", "evaluate", "models"},
    "report": {"core", "evaluate", "models"},
    "shift": {"core", "evaluate", "models", "serve"},
}
# Where a public name moved: the old import path keeps working through a one-line re-export.
ALIASES = {"agegender/api.py": "serve"}
MAX_LINES = 400


def part(module: str) -> str:
    """agegender.serve.api -> serve; agegender.params -> core."""
    names = module.split(".")
    return names[1] if len(names) >= 2 and names[1] in SUBPACKAGES else "core"


def imported(path: Path) -> set[str]:
    """The agegender modules a file imports, wherever in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("agegender.")}


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_follow_the_layout(path):
    rel = path.relative_to(ROOT).as_posix()
    module = rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    own = part(module)
    allowed = {own} | ALLOWED[own] | ({ALIASES[rel]} if rel in ALIASES else set())
    wrong = sorted(name for name in imported(path) if part(name) not in allowed)
    assert not wrong, f"{rel} ({own}) imports {wrong}; allowed: {sorted(allowed)}"


def test_every_module_is_short_and_every_subpackage_says_what_it_is_for():
    lines = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in sources()}
    long = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    for name in SUBPACKAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        where = f"agegender/{name}/__init__.py"
        assert doc and "import" in doc.lower(), f"{where}: say what it may import"
    core = [p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert set(core) >= {"params", "layout", "errors", "files", "data"}, core


def test_the_rule_is_checked_for_real(tmp_path, monkeypatch):
    """A core module importing a subpackage is caught (the check can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from agegender.training.loop import Trainer\n")
    names = imported(bad)
    assert names == {"agegender.training.loop", "agegender.training.loop.Trainer"}
    assert {part(n) for n in names} == {"training"}
