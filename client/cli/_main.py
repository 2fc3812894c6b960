"""Parse the command line, run one handler, turn failures into an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._options import DEFAULT_TARGET
from ..errors import StatewardError
from . import agents, checkpoints, events, recovery, runs, server, state
from ._args import global_options
from ._context import REFUSED, USAGE, Context
from ._failures import explain

GROUPS = (server, agents, state, runs, events, checkpoints, recovery)
"""Command groups, in help order. A new group is a module with ``register(commands)``."""

EPILOG = """\
exit codes: 0 done, 1 the server refused, 2 bad usage, 3 server unreachable.
set STATEWARD_DEBUG=1 to see tracebacks of unexpected errors."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stateward",
        description="Stateward: durable lifecycle, state and history for AI agents.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    global_options(
        parser,
        defaults={
            "target": os.environ.get("STATEWARD_TARGET") or DEFAULT_TARGET,
            "namespace": os.environ.get("STATEWARD_NAMESPACE") or "default",
            "json": False,
            "timeout": 10.0,
            "tls_ca": None,
            "tls_cert": None,
            "tls_key": None,
            "token": os.environ.get("STATEWARD_TOKEN") or None,
        },
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``stateward`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "passthrough", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_:  # --help, or a usage error already printed by argparse
        return exit_.code if isinstance(exit_.code, int) else USAGE
    args.passthrough_args = extra

    ctx = Context(args)
    try:
        return int(args.handler(ctx))
    except StatewardError as exc:
        message, code = explain(exc, args)
        print(f"error: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `stateward agents list | head`
        _silence_stdout()
        return REFUSED
    except Exception as exc:
        if os.environ.get("STATEWARD_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} "
            "(a bug; STATEWARD_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return REFUSED
    finally:
        ctx.close()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so flushing it at exit cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
