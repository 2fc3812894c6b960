"""The call being served: its request id (and, with auth on, who made it).

A request id comes from the ``x-request-id`` metadata when the client sends a sane
one (printable ASCII, no spaces, at most 128 characters) or is generated. The
access-log interceptor puts the :class:`Call` in a context variable for the
duration of the call; :class:`RequestIdFilter` copies its id onto every log record
written meanwhile, and error statuses carry it as a ``google.rpc.RequestInfo``
detail, so a client's error report and the server's log lines meet on one id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from stateward.server.domain.validation import REQUEST_ID_PATTERN

REQUEST_ID_KEY = "x-request-id"


def generate() -> str:
    """128 random bits in hex. Not a counter: every error answer carries its call's id,
    and consecutive ids would let one tenant count the calls of all the others."""
    return os.urandom(16).hex()


def from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The client's request id if it is safe to log verbatim, else a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            if isinstance(value, str) and REQUEST_ID_PATTERN.fullmatch(value):
                return value
            break  # a malformed id never reaches the logs (log injection)
    return generate()


class Call:
    """One call being served, with its invocation metadata as grpc decoded it (auth and
    the namespace read it here rather than decode it again). The request id is worked
    out on first use: a call that succeeds with no log line written never pays for it."""

    __slots__ = ("method", "metadata", "principal", "_request_id")

    def __init__(self, method: str, metadata: Iterable[tuple[str, Any]] | None) -> None:
        self.method = method
        self.metadata = metadata
        self.principal: str | None = None  # the token's name once authenticated
        self._request_id: str | None = None

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            self._request_id = from_metadata(self.metadata)
        return self._request_id


CURRENT: ContextVar[Call | None] = ContextVar("stateward_call", default=None)


def current() -> Call | None:
    return CURRENT.get()


def current_request_id() -> str:
    call = CURRENT.get()
    return call.request_id if call is not None else ""


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (and ``principal``) to records logged during a call."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = CURRENT.get()
        if call is not None:
            if not hasattr(record, "request_id"):
                record.request_id = call.request_id
            if call.principal is not None and not hasattr(record, "principal"):
                record.principal = call.principal
        return True
