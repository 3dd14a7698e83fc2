"""`agegender-serve`'s command line: the arguments, then the models, then the server.

Parsing needs nothing heavy, so --help and a usage error answer at once; the models (and
TensorFlow) load once, before the server takes its first request.
"""

from __future__ import annotations

import argparse
import sys

from agegender.errors import UserError, run
from agegender.quiet import quiet_native_logs
from agegender.serve.limits import MODELS, Limits

DEFAULTS = {"host": "127.0.0.1", "port": 8000}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    limits = Limits()
    parser = argparse.ArgumentParser(
        prog="agegender-serve",
        description="Serve the project's models over HTTP: a page at /, POST /analyze, "
        "GET /health, the API's documentation at /docs.",
        epilog="curl -F image=@photo.jpg localhost:8000/analyze gives the records "
        "agegender-predict photo.jpg prints. docs/serve.md has more.",
    )
    parser.add_argument(
        "--host",
        default=DEFAULTS["host"],
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it "
        "to the network, with no authentication)",
    )
    parser.add_argument("--port", type=int, default=DEFAULTS["port"])
    parser.add_argument(
        "--model", choices=MODELS, default="B", help="the model a request gets unless it names one"
    )
    parser.add_argument(
        "--upload-mb", type=float, default=limits.upload_mb, help="largest upload (413 above)"
    )
    parser.add_argument(
        "--timeout", type=float, default=limits.seconds, help="seconds a request may take (504)"
    )
    parser.add_argument(
        "--in-flight", type=int, default=limits.in_flight, help="images analysed at once"
    )
    parser.add_argument(
        "--waiting",
        type=int,
        default=limits.waiting,
        help="requests that may wait for a turn; more get 503 at once",
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error("--port must be 1-65535")
    for name in ("upload_mb", "timeout"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be above 0")
    if args.in_flight < 1 or args.waiting < 0:
        parser.error("--in-flight must be at least 1 and --waiting at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a UserError (no trained model, say) is one line, status 2."""
    args = parse_args(argv)

    def go() -> None:
        import uvicorn

        limits = Limits(args.upload_mb, args.timeout, args.in_flight, args.waiting)
        with quiet_native_logs():  # TensorFlow's start-up lines
            from agegender.serve.http import create_app, load_analyzers

            analyzers = load_analyzers()
        if args.model not in analyzers:
            raise UserError(f"--model {args.model}: not loaded; give one of {', '.join(analyzers)}")
        app = create_app(analyzers, args.model, limits)
        print(
            f"agegender-serve: models {', '.join(analyzers)}; open http://{args.host}:{args.port}",
            file=sys.stderr,
        )
        # A backstop above the app's own bound: connections past it get 503 from uvicorn.
        backstop = 2 * (limits.in_flight + limits.waiting) + 16
        uvicorn.run(app, host=args.host, port=args.port, limit_concurrency=backstop)

    run(go)


if __name__ == "__main__":
    main()
