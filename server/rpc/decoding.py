"""Malformed request bytes are INVALID_ARGUMENT, not UNKNOWN.

grpc parses a request before any handler runs; a parse failure (corrupt wire
format, a string field that is not UTF-8) surfaces as UNKNOWN "Unexpected
DecodeError". This interceptor hands the handler raw bytes instead and parses
them itself, so such input gets an answer a client can act on.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


async def _refuse(context: grpc.aio.ServicerContext, method: str, error: Exception) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request is not a valid {method} message ({error}); "
        "send it as the message type the method's proto declares",
    )


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):
    """Parses requests inside the call, answering INVALID_ARGUMENT when they do not parse."""

    def __init__(self) -> None:
        # One wrapper per method, built on first use: calls pay a dict lookup, not closures.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _guard(handler, details.method.rsplit("/", 1)[-1])
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped


def _guard(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """``handler`` taking raw bytes and parsing them itself."""
    parse: Any = handler.request_deserializer  # set: the interceptor checked it
    out = handler.response_serializer

    async def one(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return parse(raw)
        except (DecodeError, UnicodeDecodeError, ValueError) as error:
            await _refuse(context, method, error)

    async def each(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
        async for item in raw:
            try:
                message = parse(item)
            except (DecodeError, UnicodeDecodeError, ValueError) as error:
                await _refuse(context, method, error)
            yield message

    if handler.unary_unary:
        unary_unary: Any = handler.unary_unary  # an async callable; the stubs type it sync

        async def uu(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            return await unary_unary(await one(raw, context), context)

        return grpc.unary_unary_rpc_method_handler(uu, None, out)
    if handler.unary_stream:
        unary_stream: Any = handler.unary_stream  # an async callable; the stubs type it sync

        async def us(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            replies = unary_stream(await one(raw, context), context)
            if inspect.isasyncgen(replies):
                async for reply in replies:
                    yield reply
            else:  # a coroutine that writes with context.write()
                await replies

        return grpc.unary_stream_rpc_method_handler(us, None, out)
    if handler.stream_unary:
        stream_unary: Any = handler.stream_unary  # an async callable; the stubs type it sync

        async def su(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            return await stream_unary(each(raw, context), context)

        return grpc.stream_unary_rpc_method_handler(su, None, out)
    stream_stream: Any = handler.stream_stream

    async def ss(
        raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        replies = stream_stream(each(raw, context), context)
        if inspect.isasyncgen(replies):
            async for reply in replies:
                yield reply
        else:
            await replies

    return grpc.stream_stream_rpc_method_handler(ss, None, out)
