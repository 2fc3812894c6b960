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
    """Per call: puts a :class:`request_id.Call` in context (for log lines, error details
    and the auth interceptor, which records the caller on it), logs method, status code,
    duration and peer once at INFO, and records the RPC metrics when ``metrics`` is given.
    Outermost, so it also sees the calls auth refuses.

    grpc.aio serves each call in its own task, interceptors included, so the Call set
    here is the one the handler's task sees. The wrapped handler does not depend on
    the call, so it is built once per method and reused.
    """

    def __init__(self, metrics: RpcMetrics | None = None) -> None:
        self.metrics = metrics
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        request_id.CURRENT.set(request_id.Call(details.method, details.invocation_metadata))
        handler = await continuation(details)
        if handler is None:
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(details.method, handler)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        metrics = self.metrics

        def begin(context: grpc.aio.ServicerContext) -> tuple[Token[request_id.Call | None], float]:
            call = request_id.CURRENT.get()
            if call is None or call.method != method:  # not set by intercept_service: be safe
                call = request_id.Call(method, context.invocation_metadata())
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
            call = request_id.CURRENT.get()
            if call is not None and log.isEnabledFor(logging.INFO):
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

        inner: Any = (
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
                entered, error = begin(context), None
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
            entered, error = begin(context), None
            try:
                return await inner(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                finish(context, entered, error)

        return factory(coroutine, handler.request_deserializer, handler.response_serializer)
