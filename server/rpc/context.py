"""Per-call helpers for servicers: namespace, idempotency and error handling."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from stateward.server.domain import validation
from stateward.server.domain.errors import Violations
from stateward.server.rpc import status
from stateward.server.services.idempotency import Replay, Stored

NAMESPACE_KEY = "x-stateward-namespace"
DEFAULT_NAMESPACE = "default"

M = TypeVar("M", bound=Message)
Handler = Callable[..., Awaitable[Any]]


def namespace(context: grpc.aio.ServicerContext) -> str:
    """The namespace the call addresses (``default`` unless the metadata names one)."""
    for key, value in context.invocation_metadata() or ():
        if key == NAMESPACE_KEY:
            v = Violations()
            validation.check_namespace(v, str(value))
            v.raise_if_any()
            return str(value)
    return DEFAULT_NAMESPACE


def replay(request: Message, method: str, encode: Callable[[Any], Message]) -> Replay | None:
    """Idempotency for a mutating request (None when it carries no request_id)."""
    request_id = getattr(request, "request_id", "")
    if not request_id:
        return None
    fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    return Replay(
        request_id, method, fingerprint, lambda result: encode(result).SerializeToString()
    )


def respond(result: Any, response_type: type[M], build: Callable[[Any], M]) -> M:
    """The response for a fresh result, or the stored one for a replayed request."""
    if isinstance(result, Stored):
        return response_type.FromString(result.response)
    return build(result)


def unary(method: Handler) -> Handler:
    """Turn domain and storage errors raised by a unary handler into gRPC statuses, and
    stop its work (queued database reads and writes included) at the caller's deadline."""

    @functools.wraps(method)
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        budget = asyncio.timeout(context.time_remaining())  # None: the caller set no deadline
        try:
            async with budget:
                return await method(self, request, context)
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except TimeoutError as error:
            if not budget.expired():
                await status.abort(context, error)
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the caller's deadline passed before the work finished; "
                "a write may or may not have been applied: retry with the same request_id",
            )
        except Exception as error:
            await status.abort(context, error)

    return handler
