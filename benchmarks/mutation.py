"""Mutation score: how many small, realistic bugs in the modules whose numbers users read
the fast tests catch.

    python benchmarks/mutation.py                              # every module below
    python benchmarks/mutation.py agegender/evaluate/calibration.py --limit 20

Each mutant changes one operator or number of one module (+ and -, * and /, < and <=,
> and >=, == and !=, and/or, an integer n to n + 1, a float x to 2x): the kind of slip a
reviewer misses. The checkout's tracked files are copied to a scratch folder, the mutant is
written there (never into this checkout) and the fast tests (`-m "not slow"`) that run its
line run against it, stopping at the first failure. Killed: a test failed or timed out.
Survived: the tests passed (or no fast test runs the line), printed with its line for a
reader to judge (equivalent, or a test to write). Prints one line per mutant and a table.

Why it is fast enough for 40 minutes on 2 cores: one coverage run per module records which
test runs which line, so a mutant runs only those tests; and Keras, TensorFlow, NumPy and
pytest are imported once, each mutant's tests run in a forked copy of this process (the
project's own modules are imported only there, so every child reads the mutated file).
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# plain asserts: rewriting every test module again in each child costs seconds, and a
# mutant needs only pass or fail
FAST = ["-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception", "--assert=plain",
        "-m", "not slow"]  # fmt: skip
# module -> the test files whose fast tests may run it (coverage picks the tests among them)
MODULES = {
    "agegender/evaluate/calibration.py": ["tests/test_trust.py", "tests/test_oracles.py",
                                          "tests/test_properties.py", "tests/test_shift.py"],
    "agegender/evaluate/intervals.py": ["tests/test_trust.py", "tests/test_oracles.py"],
    "agegender/evaluate/ensemble.py": ["tests/test_trust.py", "tests/test_properties.py",
                                       "tests/test_oracles.py"],
    "agegender/evaluate/metrics.py": ["tests/test_metrics.py", "tests/test_trust.py",
                                      "tests/test_oracles.py"],
    "agegender/evaluate/trust.py": ["tests/test_trust.py", "tests/test_oracles.py"],
    "agegender/serve/api.py": ["tests/test_api.py", "tests/test_oracles.py"],
    "agegender/serve/predict.py": ["tests/test_predict.py", "tests/test_oracles.py"],
    "agegender/report/comparison.py": ["tests/test_report.py", "tests/test_report_sentences.py"],
    "agegender/report/text.py": ["tests/test_report.py", "tests/test_report_sentences.py"],
    "agegender/prepare/dataset.py": ["tests/test_prepare.py", "tests/test_utkface.py"],
}  # fmt: skip
SWAPS = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.And: ast.Or, ast.Or: ast.And,
}  # fmt: skip


def points(tree: ast.AST) -> list[tuple[ast.AST, str, int]]:
    """Every place one mutation can go, in a fixed order: (node, what changes, the line of
    the statement holding it: the line coverage records)."""
    statement_line = {}
    for statement in ast.walk(tree):  # outer statements come first: the innermost wins
        if isinstance(statement, ast.stmt):
            for node in ast.walk(statement):
                statement_line[id(node)] = statement.lineno
    found = []
    for node in ast.walk(tree):
        line = statement_line.get(id(node), 0)
        if isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAPS:
            found.append((node, "op", line))
        elif isinstance(node, ast.Compare):
            found += [(node, f"cmp{i}", line) for i, op in enumerate(node.ops) if type(op) in SWAPS]
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            found.append((node, "num", line))
    return found


def mutate(source: str, k: int) -> tuple[str, int, int, str]:
    """(the module with its k-th mutation, its line, its statement's line, a description)."""
    tree = ast.parse(source)
    node, what, statement = points(tree)[k]
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
    return ast.unparse(tree), node.lineno, statement, text


def forked(copy: Path, work: Callable[[], int], timeout: float) -> int | None:
    """Exit code of work() run in a child process inside the scratch copy, quiet; None when
    it ran past the timeout (then the child and whatever it started are killed)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 3
        try:
            os.setpgid(0, 0)
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            os.chdir(copy)
            sys.path.insert(0, str(copy))
            code = int(work())
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.02)


def who_runs(copy: Path, module: str, tests: list[str]) -> dict[int, set[str]]:
    """Line -> the pytest ids of the fast tests that run it, by one coverage run of all the
    candidate tests. A line run while a test's fixtures were set up counts for every test
    of that file (a module-scoped fixture serves them all); one run on import, for all."""
    import coverage
    import pytest

    data_file = copy / ".mutation-coverage"

    def record() -> int:
        cov = coverage.Coverage(data_file=str(data_file), include=[str(copy / module)],
                                config_file=False)  # fmt: skip
        cov.start()

        class Contexts:  # tryfirst: the context is switched before the phase runs
            @pytest.hookimpl(tryfirst=True)
            def pytest_runtest_setup(self, item: pytest.Item) -> None:
                cov.switch_context(item.nodeid.split("::")[0] + "|file")

            @pytest.hookimpl(tryfirst=True)
            def pytest_runtest_call(self, item: pytest.Item) -> None:
                cov.switch_context(item.nodeid)

            @pytest.hookimpl(tryfirst=True)
            def pytest_runtest_teardown(self, item: pytest.Item) -> None:
                cov.switch_context(item.nodeid.split("::")[0] + "|file")

        code = pytest.main([*FAST, *tests], plugins=[Contexts()])
        cov.stop()
        cov.save()
        return code

    if forked(copy, record, timeout=1800) != 0:
        sys.exit(f"mutation: {module}'s tests fail unmutated; fix them first")
    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    runs: dict[int, set[str]] = {}
    for line, contexts in data.contexts_by_lineno(str(copy / module)).items():
        chosen = set()
        for context in contexts:
            if context == "":
                chosen.update(tests)
            else:
                chosen.add(context.removesuffix("|file"))
        runs[line] = chosen
    data_file.unlink()
    return runs


def keep_only(tests: set[str]) -> list[str]:
    """The ids to pass pytest: a whole file makes its single tests redundant."""
    files = {t for t in tests if "::" not in t}
    return sorted(files | {t for t in tests if t.split("::")[0] not in files})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES))
    parser.add_argument("--limit", type=int, help="mutants per module at most (evenly spread)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per mutant's tests")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.dont_write_bytecode = True  # a mutant must never be read back from a stale .pyc
    # the slow imports, done once here and shared by every forked child
    import hypothesis  # noqa: F401
    import keras  # noqa: F401
    import matplotlib  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import PIL.Image  # noqa: F401
    import pytest
    import yaml  # noqa: F401

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        copy = Path(tmp)
        for name in tracked.stdout.split():
            if (ROOT / name).is_file():
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, copy / name)
        for module in args.modules:
            start = time.monotonic()
            original = (ROOT / module).read_text()
            runs = who_runs(copy, module, MODULES[module])
            count = len(points(ast.parse(original)))
            chosen = range(count)
            if args.limit and args.limit < count:
                chosen = sorted({round(i * count / args.limit) for i in range(args.limit)})
            killed, unrun, survived = 0, 0, []
            try:
                for k in chosen:
                    mutant, line, statement, text = mutate(original, k)
                    tests = keep_only(runs.get(statement, set()))
                    if not tests:
                        verdict, unrun = "survived (no fast test runs it)", unrun + 1
                    else:
                        (copy / module).write_text(mutant)
                        code = forked(copy, lambda t=tests: pytest.main([*FAST, "-x", *t]),
                                      args.timeout)  # fmt: skip
                        verdict = "survived" if code == 0 else "killed"
                    killed += verdict == "killed"
                    if verdict != "killed":
                        survived.append(f"{module}:{line} {text}: {verdict}")
                    print(f"{module}:{line} {text}: {verdict} ({len(tests)} tests)", flush=True)
            finally:
                (copy / module).write_text(original)
            rows.append((module, len(chosen), killed, unrun, time.monotonic() - start, survived))
    print("\nmodule | mutants | killed | score | no fast test runs it | minutes")
    for module, n, k, unrun, seconds, _ in rows:
        print(f"{module} | {n} | {k} | {k / max(n, 1):.0%} | {unrun} | {seconds / 60:.1f}")
    total, total_killed = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"all | {total} | {total_killed} | {total_killed / max(total, 1):.0%}")
    for *_, survived in rows:
        for line in survived:
            print(f"survived: {line}")


if __name__ == "__main__":
    main()
