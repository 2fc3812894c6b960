"""The gRPC interceptor that enforces bearer-token auth before any handler runs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from stateward.server import request_id
from stateward.server.rpc.status import DOMAIN, pack, request_info
from stateward.server.security.auth import Authorizer, Decision
from stateward.server.security.policy import OpenMethods

log = logging.getLogger(__name__)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid token (UNAUTHENTICATED) or without the role and
    namespace grants the method needs (PERMISSION_DENIED); open methods pass as they are.

    Allowed calls get the real handler back untouched, so auth costs no wrapper per call.
    """

    def __init__(self, authorizer: Authorizer, open_methods: OpenMethods) -> None:
        self.authorizer = authorizer
        self.open_methods = open_methods

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if details.method in self.open_methods:
            return await continuation(details)
        decision = self.authorizer.authorize(details.method, details.invocation_metadata)
        handler = await continuation(details)
        if handler is None:
            return None  # unknown method: UNIMPLEMENTED, as without auth
        call = request_id.current()
        if call is not None and decision.principal is not None:
            call.principal = decision.principal
        if decision.allowed:
            return handler
        log.info("auth refused", extra={"code": decision.code, "reason": decision.reason})
        return _refusal(handler, decision)


def _refusal(handler: grpc.RpcMethodHandler, decision: Decision) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that only aborts with the decision."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        code = getattr(code_pb2, decision.code)
        status = status_pb2.Status(code=code, message=decision.message)
        info = error_details_pb2.ErrorInfo(
            reason=decision.reason, domain=DOMAIN, metadata=decision.metadata
        )
        status.details.append(pack(info))
        extra = request_info()
        if extra is not None:
            status.details.append(extra)
        await context.abort_with_status(rpc_status.to_status(status))

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, handler.request_deserializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse, handler.request_deserializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, handler.request_deserializer)
    return grpc.stream_stream_rpc_method_handler(refuse, handler.request_deserializer)
