"""Server interceptors: the request id, one structured log line and the metrics of each RPC."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import Token
from typing import Any

import grpc

from stateward.server import request_id
from stateward.server.metrics import RpcMetrics

log = logging.getLogger("stateward.rpc")


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    code = context.code()
    if code is not None:
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if error is None:
        return "OK"
    if isinstance(error, grpc.aio.AbortError):
        return "ABORTED_CALL"
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    return "UNKNOWN"


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """Per call: puts a :class:`request_id.Call` in context (for log lines and error
    details), logs method, status code, duration and peer once at INFO, and records the
    RPC metrics when ``metrics`` is given. Outermost, so it also sees calls refused by auth.
    """

    def __init__(self, metrics: RpcMetrics | None = None) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        call = request_id.Call(request_id.from_metadata(details.invocation_metadata), method)
        outer = request_id.CURRENT.set(call)  # the interceptors further in (auth) see the call
        try:
            handler = await continuation(details)
        finally:
            request_id.CURRENT.reset(outer)
        if handler is None:
            return handler
        metrics = self.metrics

        def begin() -> tuple[Token[request_id.Call | None], float]:
            if metrics is not None:
                metrics.started(method)
            return request_id.CURRENT.set(call), time.perf_counter()

        def finish(
            context: grpc.aio.ServicerContext,
            entered: tuple[Token[request_id.Call | None], float],
            error: BaseException | None,
        ) -> None:
            token, started = entered
            code = _code(context, error)
            elapsed = time.perf_counter() - started
            if metrics is not None:
                metrics.finished(method, code, elapsed)
            if log.isEnabledFor(logging.INFO):
                extra = {
                    "method": method,
                    "code": code,
                    "duration_ms": round(elapsed * 1000, 3),
                    "peer": context.peer(),
                    "request_id": call.request_id,
                }
                if call.principal is not None:
                    extra["principal"] = call.principal
                log.info("rpc", extra=extra)
            try:
                request_id.CURRENT.reset(token)
            except ValueError:  # a stream closed from another context: nothing to restore
                pass

        inner = (
            handler.unary_unary
            or handler.stream_unary
            or handler.unary_stream
            or handler.stream_stream
        )
        factory = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
            if handler.stream_unary
            else grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )

        if inspect.isasyncgenfunction(inner):  # a streaming handler that yields its responses

            async def streaming(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                entered, error = begin(), None
                try:
                    async for item in inner(request, context):
                        yield item
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    finish(context, entered, error)

            return factory(streaming, handler.request_deserializer, handler.response_serializer)

        # A unary response, or a stream written with context.write() (or refused at once).
        async def coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
            entered, error = begin(), None
            try:
                return await inner(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                finish(context, entered, error)

        return factory(coroutine, handler.request_deserializer, handler.response_serializer)
