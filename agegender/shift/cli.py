"""Console entry points of agegender-evaluate and agegender-calibrate: the arguments are read
first, so --help and usage errors answer before TensorFlow is imported."""

from __future__ import annotations

from agegender.errors import run
from agegender.quiet import quiet_native_logs
from agegender.shift.arguments import calibrate_args, evaluate_args


def evaluate_main(argv: list[str] | None = None) -> None:
    args = evaluate_args(argv)
    with quiet_native_logs():
        from agegender.shift import commands
    run(lambda: commands.evaluate(args))


def calibrate_main(argv: list[str] | None = None) -> None:
    args = calibrate_args(argv)
    with quiet_native_logs():
        from agegender.shift import commands
    run(lambda: commands.calibrate(args))
