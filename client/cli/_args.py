"""Argument types shared by command groups; a bad value is a usage error (exit 2)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def json_object(text: str) -> dict[str, Any]:
    """``--config '{"k": 1}'``, ``--config @file.json`` or ``--config @-`` (stdin)."""
    where = ""
    if text.startswith("@"):
        source = text[1:]
        where = "stdin " if source == "-" else f"{source} "
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{where}is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{where}must be a JSON object, like '{{\"k\": 1}}'")
    return value


def label(text: str) -> tuple[str, str]:
    """``--label key=value``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return number


def non_negative_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return number


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d``, ``1w`` (a bare number is seconds)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90s, 15m, 2h or 7d, got {text!r}"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def timestamp(text: str) -> datetime:
    """An ISO 8601 time (``2026-01-31T12:00:00Z``, ``2026-01-31``); without a zone, UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time like 2026-01-31T12:00:00Z, got {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def choice(options: list[str]) -> Any:
    """A case-insensitive choice among ``options`` (upper-case names)."""

    def parse(text: str) -> str:
        if text.upper() not in options:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(options)}, got {text!r}")
        return text.upper()

    return parse


# -- options every command accepts ---------------------------------------------------


def global_options(parser: argparse.ArgumentParser, *, defaults: dict[str, Any] | None) -> None:
    """Connection and output options. With ``defaults`` None they default to "not
    given", so repeating them after a subcommand overrides the top level only when used."""

    def default(name: str) -> Any:
        return argparse.SUPPRESS if defaults is None else defaults[name]

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--target",
        default=default("target"),
        help="host:port of the server (env STATEWARD_TARGET; default %(default)s)",
    )
    group.add_argument(
        "--namespace",
        default=default("namespace"),
        help="namespace to work in (env STATEWARD_NAMESPACE; default %(default)s)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default("json"),
        help="print JSON for scripts instead of tables",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default("timeout"),
        help="give up on a call after this long, retries included (default %(default)s)",
    )
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=default("tls_ca"),
        help="connect with TLS, trusting this PEM CA bundle",
    )
    group.add_argument(
        "--tls-cert",
        metavar="FILE",
        default=default("tls_cert"),
        help="client certificate (PEM) for mutual TLS",
    )
    group.add_argument(
        "--tls-key",
        metavar="FILE",
        default=default("tls_key"),
        help="private key (PEM) of --tls-cert",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        default=default("token"),
        # The default (from the environment) is a secret: never shown in --help.
        help="bearer token for a server with auth on (env STATEWARD_TOKEN, preferred: "
        "a command line shows in ps and shell history)",
    )


SHARED = argparse.ArgumentParser(add_help=False)
global_options(SHARED, defaults=None)
for _action in SHARED._actions:  # accepted after any subcommand, documented once at the top
    _action.help = argparse.SUPPRESS

GLOBAL_NOTE = "The options of 'stateward --help' (--target, --json, ...) work here too."


def command(
    actions: Any, name: str, summary: str, handler: Any, **defaults: Any
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` (accepting the global options too) that runs ``handler``."""
    parser: argparse.ArgumentParser = actions.add_parser(
        name, help=summary, description=summary, epilog=GLOBAL_NOTE, parents=[SHARED]
    )
    parser.set_defaults(handler=handler, **defaults)
    return parser
