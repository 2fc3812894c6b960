"""Replaying answers to retried mutations.

A mutation that carries a ``request_id`` checks, inside its own write transaction,
whether that id already has a stored answer. If so, it writes nothing and returns
the stored bytes; otherwise it does its work and stores its answer in the same
transaction, so the answer exists exactly when the mutation committed.

The stored answer is the serialised response, produced by an ``encode`` callable
the transport supplies: the service layer never sees a protobuf type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from stateward.server.domain.errors import InvalidArgument
from stateward.storage import WriteContext
from stateward.storage import idempotency as stored_answers

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Replay:
    """How to recognise and store one call's answer."""

    request_id: str
    method: str
    fingerprint: str
    encode: Callable[[Any], bytes]


@dataclass(frozen=True, slots=True)
class Stored:
    """An answer replayed from an earlier call with the same request_id."""

    response: bytes


def guarded(
    namespace: str, replay: Replay | None, fn: Callable[[WriteContext], T]
) -> Callable[[WriteContext], T | Stored]:
    """Wrap a write so a retried request_id returns the first answer instead of writing again."""
    if replay is None or not replay.request_id:
        return fn

    def write(ctx: WriteContext) -> T | Stored:
        previous = stored_answers.get(ctx.conn, namespace, replay.request_id)
        if previous is not None:
            if previous.method != replay.method or previous.fingerprint != replay.fingerprint:
                raise InvalidArgument.one(
                    "request_id",
                    f"was already used for a different request ({previous.method}); "
                    "use a new request_id for a new request",
                )
            return Stored(previous.response)
        result = fn(ctx)
        answer = stored_answers.StoredAnswer(
            replay.method, replay.fingerprint, replay.encode(result)
        )
        stored_answers.put(ctx.conn, namespace, replay.request_id, answer, ctx.now)
        return result

    return write
