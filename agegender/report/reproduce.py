"""Section 5, Reproduce: the git state, the hashes dvc.lock records and the commands."""

from __future__ import annotations

import yaml

from agegender.layout import LOCK
from agegender.report.document import Block, Code, Heading, Table, Text
from agegender.report.text import fmt


def environment_blocks(environment: dict) -> list[Block]:
    """What the float results depend on besides params, code and data (evaluate's record)."""
    packages = ", ".join(f"{k} {v}" for k, v in environment.get("packages", {}).items())
    rows = [
        ["CPU", f"{environment.get('cpu', '?')} ({', '.join(environment.get('cpu_flags', []))})"],
        ["Keras backend", str(environment.get("keras_backend", "?"))],
        ["threads", str(environment.get("threads") or "?")],
        ["Python", str(environment.get("python", "?"))],
        ["libraries", packages],
    ]
    return [
        Text(
            "What these numbers depend on besides the code, params and data below. The same "
            "library versions, thread count (`train.threads`) and CPU model give the same bytes "
            "on any machine, whatever its core count; another CPU model trains other weights "
            "(its kernels add in another order), and the scores then differ by about as much "
            "as another seed's. `python benchmarks/fingerprint.py` tells in a minute whether a "
            "machine reproduces these bytes, and `python scripts/compare_runs.py` whether two "
            "runs agree within the spread of seeds."
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
        Text(
            "The code and params these results come from are those whose md5s `dvc.lock` "
            "records; commit it with this report, and `dvc status` says whether a checkout "
            "still matches them."
        ),
        *environment_blocks(environment),
        *lock,
        Text("The exact parameters (`params.yaml`):"),
        Code(params_text, folded="params.yaml in full"),
        Text("To rerun or vary the pipeline:"),
        Code(commands),
    ]


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
