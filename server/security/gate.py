"""Bearer-token auth at the door of every guarded RPC, before its request is parsed.

The transport layer (``server/transport.py``) asks :meth:`AuthGate.guards` once per
method when it wraps the handler, then per call :meth:`AuthGate.decide`, and on a
refusal awaits :func:`refuse`.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from stateward.server.request_id import Call
from stateward.server.rpc.status import DOMAIN, pack, request_info
from stateward.server.security.auth import Authorizer, Decision
from stateward.server.security.policy import OpenMethods

log = logging.getLogger(__name__)


class AuthGate:
    """Refuses calls without a valid token (UNAUTHENTICATED) or without the role and
    namespace grants the method needs (PERMISSION_DENIED); open methods are not guarded."""

    def __init__(self, authorizer: Authorizer, open_methods: OpenMethods) -> None:
        self.authorizer = authorizer
        self.open_methods = open_methods

    def guards(self, full_method: str) -> bool:
        return full_method not in self.open_methods

    def decide(self, call: Call) -> Decision:
        """The decision for ``call``, from its method and metadata; records the principal."""
        decision = self.authorizer.authorize(call.method, call.metadata)
        if decision.principal is not None:
            call.principal = decision.principal
        if not decision.allowed:
            log.info("auth refused", extra={"code": decision.code, "reason": decision.reason})
        return decision


async def refuse(context: grpc.aio.ServicerContext, decision: Decision) -> NoReturn:
    """Abort the call with the refusal: code, message, ErrorInfo and the request id."""
    status = status_pb2.Status(code=getattr(code_pb2, decision.code), message=decision.message)
    info = error_details_pb2.ErrorInfo(
        reason=decision.reason, domain=DOMAIN, metadata=decision.metadata
    )
    status.details.append(pack(info))
    extra = request_info()
    if extra is not None:
        status.details.append(extra)
    await context.abort_with_status(rpc_status.to_status(status))
