"""``stateward serve``, ``db`` and ``token``: handed to the server, imported only when used.

The client installs without the server's dependencies, so the server is
imported inside the handlers; every argument after the command word goes to
the server's own parser (``stateward serve --help`` shows its help).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ._context import REFUSED, USAGE, Context

INSTALL_HINT = "the server is not installed: pip install 'stateward[server]'"


def register(commands: Any) -> None:
    for name, handler, summary in (
        ("serve", _serve, "run the Stateward server (see 'stateward serve --help')"),
        ("db", _db, "manage the database schema: upgrade, current, check"),
        ("token", _token, "make a bearer token and its hash for the tokens file: new, hash"),
    ):
        # No options of its own (not even -h): everything after the word is the server's.
        parser: argparse.ArgumentParser = commands.add_parser(name, help=summary, add_help=False)
        parser.set_defaults(handler=handler, passthrough=True)


def _serve(ctx: Context) -> int:
    try:
        from stateward.server.main import serve_main
    except ImportError as exc:
        return _not_installed(exc)
    return _run(serve_main, ctx)


def _db(ctx: Context) -> int:
    try:
        from stateward.server.main import db_main
    except ImportError as exc:
        return _not_installed(exc)
    return _run(db_main, ctx)


def _token(ctx: Context) -> int:
    try:
        from stateward.server.security.token_cli import token_main
    except ImportError as exc:
        return _not_installed(exc)
    return _run(token_main, ctx)


def _not_installed(exc: ImportError) -> int:
    print(f"error: {INSTALL_HINT} ({exc})", file=sys.stderr)
    return USAGE


def _run(entry: Callable[[list[str]], int], ctx: Context) -> int:
    try:
        return entry(list(ctx.args.passthrough_args))
    except SystemExit as exit_:  # the server's own argparse: --help, usage errors
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return REFUSED
