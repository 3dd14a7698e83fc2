"""Share this project's committed results through a scratch DVC remote, and check them.

    python scripts/share_check.py

Pushes the DVC cache to a local-directory remote in a temporary folder, `git clone`s the
repository next to it, `dvc pull`s there, and checks that the models are byte-identical
and that `dvc repro` in the clone has nothing to run. Prints every command and its output.
Commit first: the clone sees only what git has.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from repo import share_roundtrip  # scripts/repo.py, beside this file

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agegender-share-") as tmp:
        for entry in share_roundtrip(ROOT, Path(tmp)):
            print(entry.replace(tmp, "/tmp/share"), flush=True)
    print("share check: ok")


if __name__ == "__main__":
    main()
