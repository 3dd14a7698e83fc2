"""Mutation score: how many small, realistic bugs in the modules whose numbers users read
the fast tests catch.

    python benchmarks/mutation.py                              # every module below
    python benchmarks/mutation.py agegender/evaluate/calibration.py --limit 20

Each mutant changes one operator or number of one module (+ and -, * and /, < and <=,
> and >=, == and !=, and/or, an integer n to n + 1, a float x to 2x): the kind of slip a
reviewer misses. The checkout's tracked files are copied to a scratch folder, the mutant is
written there (never into this checkout) and the module's fast tests (`-m "not slow"`) run
against it, stopping at the first failure. Killed: a test failed or timed out. Survived: the
tests passed, printed with its line for a reader to judge (equivalent, or a test to write).
Prints one line per mutant and a table per module.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# module -> the fast tests that cover it
MODULES = {
    "agegender/evaluate/calibration.py": ["tests/test_trust.py", "tests/test_oracles.py",
                                          "tests/test_properties.py"],
    "agegender/evaluate/intervals.py": ["tests/test_trust.py", "tests/test_oracles.py"],
    "agegender/evaluate/ensemble.py": ["tests/test_trust.py", "tests/test_properties.py"],
    "agegender/evaluate/metrics.py": ["tests/test_metrics.py", "tests/test_trust.py"],
    "agegender/evaluate/trust.py": ["tests/test_trust.py"],
    "agegender/report/text.py": ["tests/test_report.py"],
    "agegender/report/comparison.py": ["tests/test_report.py"],
}  # fmt: skip
SWAPS = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.And: ast.Or, ast.Or: ast.And,
}  # fmt: skip


def points(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    """Every place one mutation can go, in a fixed order: (node, what changes)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAPS:
            found.append((node, "op"))
        elif isinstance(node, ast.Compare):
            found += [(node, f"cmp{i}") for i, op in enumerate(node.ops) if type(op) in SWAPS]
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            found.append((node, "num"))
    return found


def mutate(source: str, k: int) -> tuple[str, int, str]:
    """(the module with its k-th mutation, its line, a description)."""
    tree = ast.parse(source)
    node, what = points(tree)[k]
    if what == "op":
        old = type(node.op)
        node.op = SWAPS[old]()
        text = f"{old.__name__} -> {SWAPS[old].__name__}"
    elif what.startswith("cmp"):
        i = int(what[3:])
        old = type(node.ops[i])
        node.ops[i] = SWAPS[old]()
        text = f"{old.__name__} -> {SWAPS[old].__name__}"
    else:
        old = node.value
        node.value = old + 1 if isinstance(old, int) else (2 * old if old else 1.0)
        text = f"{old!r} -> {node.value!r}"
    return ast.unparse(tree), node.lineno, text


def run_tests(copy: Path, tests: list[str], timeout: int) -> str:
    """ "pass", "fail" or "timeout" of the fast tests in the scratch copy."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               "-m", "not slow", *tests]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "pass" if done.returncode == 0 else "fail"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES))
    parser.add_argument("--limit", type=int, help="mutants per module at most (evenly spread)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test run")
    args = parser.parse_args()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        copy = Path(tmp)
        for name in tracked.stdout.split():
            if (ROOT / name).is_file():
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, copy / name)
        for module in args.modules:
            tests = MODULES[module]
            original = (ROOT / module).read_text()
            if run_tests(copy, tests, args.timeout) != "pass":
                sys.exit(f"mutation: {module}'s tests fail unmutated; fix them first")
            count = len(points(ast.parse(original)))
            chosen = range(count)
            if args.limit and args.limit < count:
                chosen = sorted({round(i * count / args.limit) for i in range(args.limit)})
            killed, survived, start = 0, [], time.monotonic()
            try:
                for k in chosen:
                    mutant, line, text = mutate(original, k)
                    (copy / module).write_text(mutant)
                    verdict = run_tests(copy, tests, args.timeout)
                    killed += verdict != "pass"
                    if verdict == "pass":
                        survived.append(f"{module}:{line} {text}")
                    said = "survived" if verdict == "pass" else "killed"
                    print(f"{module}:{line} {text}: {said}", flush=True)
            finally:
                (copy / module).write_text(original)
            rows.append((module, len(chosen), killed, time.monotonic() - start, survived))
    print("\nmodule | mutants | killed | score | minutes")
    for module, n, k, seconds, _ in rows:
        print(f"{module} | {n} | {k} | {k / max(n, 1):.0%} | {seconds / 60:.1f}")
    for *_, survived in rows:
        for line in survived:
            print(f"survived: {line}")


if __name__ == "__main__":
    main()
