"""What every RPC goes through, built once per method when its handler is registered.

:class:`Server` stands in for the grpc.aio server while services register. Every method
handler it is given (generated ``add_*_to_server`` functions, a servicer's own generic
handler, the registered-method handlers of health and reflection) is wrapped once by
:meth:`CallLayer.wrap` into one coroutine that, per call:

1. puts the :class:`request_id.Call` in context (request id, principal, metadata);
2. counts the call in flight (with ``metrics_listen``);
3. checks the bearer token unless auth is off or the method is open, before parsing;
4. parses the raw request bytes itself: malformed input is INVALID_ARGUMENT, where
   grpc's own parsing would answer UNKNOWN (``rpc/decoding.py``);
5. runs the servicer's handler: unary, or a stream from an async generator or from
   ``context.write``;
6. records the status code and duration and logs one ``rpc`` line at INFO.

No grpc ServerInterceptor is installed: grpc.aio runs every interceptor's
``intercept_service`` coroutine chain on every call, and each layer wrapped the handler
again. Response serializers pass through untouched, so a servicer may register a
handler with ``response_serializer=None`` to send bytes it encoded itself.

grpc sees one generic handler, :class:`_Router`: a dict lookup by method name. Nothing
is registered with grpc's registered-method API, because grpc.aio's accept loop then
``asyncio.wait``s on one pending future per registered method for every call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import grpc

from stateward.server import request_id
from stateward.server.metrics import MethodMetrics
from stateward.server.rpc import decoding
from stateward.server.security.gate import AuthGate, refuse

log = logging.getLogger("stateward.rpc")

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


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


class _Method:
    """One method's per-call bookkeeping: its name, metrics and auth gate, bound once."""

    __slots__ = ("full", "name", "metrics", "gate")

    def __init__(self, full: str, metrics: MethodMetrics | None, gate: AuthGate | None) -> None:
        self.full = full
        self.name = full.rpartition("/")[2]
        self.metrics = metrics
        self.gate = gate

    def begin(self, context: grpc.aio.ServicerContext) -> request_id.Call:
        call = request_id.CURRENT.get()
        if call is None or call.method != self.full:  # not set by the router: build it here
            call = request_id.Call(self.full, context.invocation_metadata())
            request_id.CURRENT.set(call)  # the call's own task: nothing to restore after
        if self.metrics is not None:
            self.metrics.started()
        return call

    def finish(
        self,
        context: grpc.aio.ServicerContext,
        call: request_id.Call,
        started: float,
        error: BaseException | None,
    ) -> None:
        logged = log.isEnabledFor(logging.INFO)
        if self.metrics is None and not logged:
            return
        code = _code(context, error)
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.finished(code, elapsed)
        if logged:
            extra = {
                "method": self.full,
                "code": code,
                "duration_ms": round(elapsed * 1000, 3),
                "peer": context.peer(),
                "request_id": call.request_id,
            }
            if call.principal is not None:
                extra["principal"] = call.principal
            log.info("rpc", extra=extra)


class CallLayer:
    """The per-call work of every RPC; :meth:`wrap` applies it to one method's handler."""

    def __init__(self, *, metrics: bool = False, gate: AuthGate | None = None) -> None:
        self.metrics = metrics
        self.gate = gate

    def wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        gate = self.gate if self.gate is not None and self.gate.guards(full_method) else None
        m = _Method(full_method, MethodMetrics(full_method) if self.metrics else None, gate)
        parse = handler.request_deserializer  # None: the handler takes bytes
        out = handler.response_serializer
        inner: Any = (
            handler.unary_unary
            or handler.unary_stream
            or handler.stream_unary
            or handler.stream_stream
        )
        if not (inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)):
            # Every servicer here is async; a plain function is a generated base class's
            # default (health's List, say), which only answers UNIMPLEMENTED.
            inner = _unimplemented
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_unary(m, inner, parse), None, out)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_client_stream(m, inner, parse), None, out)
        streaming = _streaming(m, inner, parse, handler.request_streaming)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming, None, out)
        return grpc.stream_stream_rpc_method_handler(streaming, None, out)


async def _unimplemented(_request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")


# The per-call coroutines. Each is built once per method; its steps are inlined rather
# than split into helper coroutines, since every extra await layer costs every call.


def _unary(m: _Method, inner: Any, parse: Any) -> Behavior:
    async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        call = m.begin(context)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            if m.gate is not None:
                decision = m.gate.decide(call)
                if not decision.allowed:
                    await refuse(context, decision)
            request: Any = raw
            if parse is not None:
                try:
                    request = parse(raw)
                except decoding.DECODE_ERRORS as exc:
                    await decoding.refuse(context, m.name, exc)
            return await inner(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            m.finish(context, call, started, error)

    return unary_unary


def _client_stream(m: _Method, inner: Any, parse: Any) -> Behavior:
    async def stream_unary(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
        call = m.begin(context)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            if m.gate is not None:
                decision = m.gate.decide(call)
                if not decision.allowed:
                    await refuse(context, decision)
            requests = raw if parse is None else decoding.parsed(raw, parse, m.name, context)
            return await inner(requests, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            m.finish(context, call, started, error)

    return stream_unary


def _streaming(m: _Method, inner: Any, parse: Any, request_streaming: bool) -> Behavior:
    """A response stream, driven here with ``context.write`` (what grpc would do with an
    async generator), so the handler's generator is the only generator layer."""
    generator = inspect.isasyncgenfunction(inner)

    async def stream(raw: Any, context: grpc.aio.ServicerContext) -> None:
        call = m.begin(context)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            if m.gate is not None:
                decision = m.gate.decide(call)
                if not decision.allowed:
                    await refuse(context, decision)
            request: Any = raw
            if parse is not None:
                if request_streaming:
                    request = decoding.parsed(raw, parse, m.name, context)
                else:
                    try:
                        request = parse(raw)
                    except decoding.DECODE_ERRORS as exc:
                        await decoding.refuse(context, m.name, exc)
            if not generator:  # writes its responses with context.write()
                await inner(request, context)
                return
            replies = inner(request, context)
            try:
                write = context.write
                async for reply in replies:
                    await write(reply)
            finally:
                await replies.aclose()  # run its cleanup now, even when the write failed
        except BaseException as exc:
            error = exc
            raise
        finally:
            m.finish(context, call, started, error)

    return stream


class _Router(grpc.GenericRpcHandler):
    """The one generic handler grpc queries: every method's wrapped handler by name.

    Generic handlers given to :class:`Server` are asked once per method name, on its
    first call, and their answer is wrapped and kept: like grpc's own
    ``method_handlers_generic_handler``, they must answer by method name alone.
    """

    def __init__(self, layer: CallLayer) -> None:
        self.layer = layer
        self.routes: dict[str, grpc.RpcMethodHandler] = {}
        self.sources: list[grpc.GenericRpcHandler] = []

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        # grpc decoded the metadata for this lookup; the handler runs next in this same
        # task (grpc.aio serves each call in its own task), so hand it over in context.
        request_id.CURRENT.set(request_id.Call(method, details.invocation_metadata))
        handler = self.routes.get(method)
        if handler is None:
            for source in self.sources:
                found = source.service(details)
                if found is not None:
                    handler = self.routes[method] = self.layer.wrap(method, found)
                    break
        return handler  # None: UNIMPLEMENTED


class Server(grpc.aio.Server):
    """A grpc.aio server whose every handler runs inside :class:`CallLayer`.

    Pass it wherever a ``grpc.aio.Server`` is expected for registration
    (``add_*_to_server``, ``register(server, deps)``); handlers can only be added
    through it, since they go to the inner server wrapped.
    """

    def __init__(self, inner: grpc.aio.Server, layer: CallLayer) -> None:
        self._inner = inner
        self._router = _Router(layer)
        inner.add_generic_rpc_handlers((self._router,))

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]
    ) -> None:
        self._router.sources.extend(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        # Served by the router like every other method (see the module docstring).
        for name, handler in method_handlers.items():
            full = f"/{service_name}/{name}"
            self._router.routes[full] = self._router.layer.wrap(full, handler)

    def add_insecure_port(self, address: str) -> int:
        return self._inner.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._inner.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self, grace: float | None) -> None:
        await self._inner.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self._inner.wait_for_termination(timeout)
