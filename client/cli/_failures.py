"""Errors as one line a person can act on, and the exit code that goes with it."""

from __future__ import annotations

import argparse

from ..errors import (
    AlreadyExists,
    DeadlineExceeded,
    InvalidArgument,
    InvalidTransition,
    NotFound,
    StatewardError,
    TransportError,
    Unavailable,
    Unimplemented,
    UsageError,
)
from ._context import REFUSED, UNREACHABLE, USAGE


def explain(exc: StatewardError, args: argparse.Namespace) -> tuple[str, int]:
    """The message (without ``error:``) and exit code for a failed command."""
    target = args.target
    if isinstance(exc, UsageError):
        return exc.message, USAGE
    if isinstance(exc, Unavailable):
        if exc.rpc_status is None:  # the server never answered: no connection
            tls = " over TLS" if args.tls_ca or args.tls_cert else ""
            return (
                f"cannot reach Stateward at {target}{tls} "
                "(is the server running? start it with 'stateward serve')",
                UNREACHABLE,
            )
        return f"Stateward at {target} is unavailable for now: {exc.message}", UNREACHABLE
    if isinstance(exc, DeadlineExceeded):
        return (
            f"Stateward at {target} did not answer within {args.timeout:g}s "
            "(is it overloaded? try a larger --timeout)",
            UNREACHABLE,
        )
    if isinstance(exc, TransportError):
        return f"lost the call to Stateward at {target}: {exc.message}", UNREACHABLE
    return _refusal(exc, args), REFUSED


def _refusal(exc: StatewardError, args: argparse.Namespace) -> str:
    if isinstance(exc, InvalidTransition):
        return _transition(exc, args)
    if isinstance(exc, InvalidArgument) and exc.field_violations:
        problems = "; ".join(f"{v.field}: {v.description}" for v in exc.field_violations)
        return f"invalid request: {problems}"
    if isinstance(exc, NotFound):
        return f"{exc.message} (namespace {args.namespace!r})"
    if isinstance(exc, AlreadyExists):
        return f"{exc.message} (namespace {args.namespace!r})"
    if isinstance(exc, Unimplemented):
        return f"the server at {args.target} does not support this yet ({exc.message})"
    return exc.message


def _transition(exc: InvalidTransition, args: argparse.Namespace) -> str:
    agent = getattr(args, "agent_id", None) or _subject_agent(exc) or "?"
    current = exc.current_status or "in another status"
    wanted = exc.target_status or getattr(args, "target_status", None)
    move = f"it cannot move to {wanted}" if wanted else "that move is not allowed"
    if not exc.allowed_statuses:
        return f"agent {agent!r} is {current}, which is final; {move}"
    return f"agent {agent!r} is {current}; {move} (allowed: {', '.join(exc.allowed_statuses)})"


def _subject_agent(exc: StatewardError) -> str | None:
    for violation in exc.precondition_violations:
        if violation.subject.startswith("agents/"):
            return violation.subject.removeprefix("agents/")
    return None
