"""What a command handler gets: its arguments, a client, and where to write."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from .. import Client, TLSConfig
from . import _format

T = TypeVar("T")

# Exit codes: shared by every command, documented in `stateward --help`.
OK = 0
REFUSED = 1  # the server refused (or a command found nothing to do)
USAGE = 2  # bad arguments or local input; nothing was sent
UNREACHABLE = 3  # the server could not be reached or did not answer in time


@dataclass
class Context:
    """One invocation of the command line."""

    args: argparse.Namespace
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    _client: Client | None = None

    def client(self) -> Client:
        """A client built from the global options, connected on first use."""
        if self._client is None:
            args = self.args
            tls = None
            if args.tls_ca or args.tls_cert or args.tls_key:
                tls = TLSConfig(args.tls_ca, args.tls_cert, args.tls_key)
            self._client = Client.connect(
                args.target,
                timeout=args.timeout,
                namespace=args.namespace,
                tls=tls,
                token=args.token,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def emit(self, value: T, render: Callable[[T], str]) -> None:
        """Print ``value``: as JSON with ``--json``, else as ``render`` shows it to people."""
        text = _format.to_json(value) if self.args.json else render(value)
        if text:
            print(text, file=self.stdout)

    def note(self, text: str) -> None:
        """A remark for people on stderr (progress, hints), never mixed into the output."""
        print(text, file=self.stderr, flush=True)

    def say(self, text: str, value: Any = None) -> None:
        """A one-line confirmation for people; with ``--json``, ``value`` instead (if any)."""
        if self.args.json:
            if value is not None:
                print(_format.to_json(value), file=self.stdout)
        else:
            print(text, file=self.stdout)
