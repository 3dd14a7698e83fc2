"""Section 5, Reproduce: the git state, the hashes dvc.lock records and the commands."""

from __future__ import annotations

import subprocess

import yaml

from agegender.layout import LOCK
from agegender.report.document import Block, Code, Heading, Table, Text
from agegender.report.text import fmt


def environment_blocks(environment: dict) -> list[Block]:
    """The machine evaluate ran on (in one `dvc repro`, the one that trained too)."""
    packages = ", ".join(f"{k} {v}" for k, v in environment.get("packages", {}).items())
    rows = [
        ["CPU", f"{environment.get('cpu', '?')} ({', '.join(environment.get('cpu_flags', []))})"],
        ["cores", str(environment.get("cores", "?"))],
        ["Python", str(environment.get("python", "?"))],
        ["Keras backend", str(environment.get("keras_backend", "?"))],
        ["libraries", packages],
    ]
    return [
        Text(
            "The machine these numbers were computed on. The same params, commit and library "
            "versions give byte-identical results on the same CPU model; on another CPU model "
            "(AVX2 against AVX-512) oneDNN and Eigen pick other kernels, and scores differ "
            "slightly (up to about 0.4 points of gender accuracy, measured between an AMD AVX2 "
            "and an Intel AVX-512 machine)."
        ),
        Table(["", ""], rows),
    ]


def reproduce_section(
    params_text: str, epochs_a: int, learning_rate_b: float, environment: dict
) -> list[Block]:
    """`params_text` is params.yaml as is; the two numbers seed the example experiment."""
    rows = lock_rows()
    lock = (
        [
            Text("The data and models these results come from, as `dvc.lock` records them:"),
            Table(["path", "role", "md5", "bytes"], rows),
        ]
        if rows
        else [
            Text(
                "No `dvc.lock` here (the stages ran outside DVC), so there are no recorded hashes."
            )
        ]
    )
    commands = "\n".join(
        [
            "dvc pull                 # data and models from the DVC remote, if one is set up",
            "dvc repro                # rerun every stage whose inputs changed, this report too",
            f"dvc exp run -S model_a.fit.epochs={2 * epochs_a} -S "
            f"model_b.phase2.learning_rate={learning_rate_b / 3:.2g}   # an experiment",
            "dvc exp show             # experiments side by side",
            "dvc metrics diff         # scores against the last commit",
            "dvc params diff",
            "dvc plots diff           # learning curves and evaluation plots",
            "python -m stages.report  # this report only, from the outputs in place",
        ]
    )
    return [
        Heading(2, "Reproduce"),
        Text(git_state()),
        *environment_blocks(environment),
        *lock,
        Text("The exact parameters (`params.yaml`):"),
        Code(params_text),
        Text("To rerun or vary the pipeline:"),
        Code(commands),
    ]


def git(*args: str) -> str | None:
    """git's output, or None without git or outside a repository."""
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def git_state() -> str:
    """The commit, and which code and params files differ from it: the pipeline's own outputs
    (dvc.lock, reports/, data/, models/) change with every run and are not listed."""
    head = git("rev-parse", "HEAD")
    if head is None:
        return "The git commit is unknown (no git, or not a git repository)."
    # --no-optional-locks: reading the state must not rewrite the index
    status = git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no") or ""
    outputs = (LOCK.as_posix(), "reports/", "data/", "models/")
    changed = [line[3:] for line in status.splitlines() if not line[3:].startswith(outputs)]
    text = f"Git commit `{head.strip()}`"
    if not changed:
        return text + ", no uncommitted changes to tracked files."
    shown_files = ", ".join(f"`{c}`" for c in changed[:10])
    more = f" and {len(changed) - 10} more" if len(changed) > 10 else ""
    return f"{text}, with uncommitted changes to {shown_files}{more}."


def lock_rows() -> list[list[str]]:
    """md5 of every data and model file dvc.lock records: what these numbers came from."""
    if not LOCK.is_file():
        return []
    try:
        lock = yaml.safe_load(LOCK.read_text()) or {}
    except yaml.YAMLError:
        return []
    rows, seen = [], set()
    for stage, entry in (lock.get("stages") or {}).items():
        for kind in ("deps", "outs"):
            for item in (entry or {}).get(kind) or []:
                path = str(item.get("path", ""))
                if path in seen or not path.startswith(("data/", "models/")):
                    continue
                seen.add(path)
                role = f"output of {stage}" if kind == "outs" else f"input of {stage}"
                size = item.get("size")
                rows.append(
                    [
                        f"`{path}`",
                        role,
                        f"`{item.get('md5', '?')}`",
                        fmt(size, "int") if size is not None else "–",
                    ]
                )
    return rows
