"""`agegender-predict`'s command line: the arguments, then the work.

Parsing needs nothing heavy, so `--help` and a usage error answer at once; TensorFlow is
imported only to predict, with its start-up lines (absl, oneDNN, the cuInit error of a CPU
machine) kept off the terminal.
"""

from __future__ import annotations

from agegender.quiet import quiet_native_logs
from agegender.serve.arguments import parse_args


def main(argv: list[str] | None = None) -> None:
    """Console entry point: answer --help and usage errors before importing TensorFlow."""
    parse_args(argv)
    with quiet_native_logs():
        from agegender.serve import predict
    predict.main(argv)
