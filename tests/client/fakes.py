"""A fake Stateward server: a real grpc.aio server on loopback, with scripted answers.

Every RPC of the four services is served. A test installs a handler per
method name (``fake.handlers["GetAgent"] = lambda request: ...``); a handler
returns the response (an iterable of responses for a server stream), may be
``async``, and raises :class:`Refuse` to fail the call with a rich
``google.rpc.Status``. Methods without a handler answer UNIMPLEMENTED. Every
call is recorded with its request and metadata.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from stateward.v1 import (
    execution_pb2,
    execution_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    recovery_pb2,
    recovery_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)

SERVICES = [
    (lifecycle_pb2, lifecycle_pb2_grpc, "LifecycleService"),
    (state_pb2, state_pb2_grpc, "StateService"),
    (execution_pb2, execution_pb2_grpc, "ExecutionService"),
    (recovery_pb2, recovery_pb2_grpc, "RecoveryService"),
]


class Refuse(Exception):
    """Raised by a handler: fail the call with this rich status.

    ``shown_message`` sends another message on the call than inside the status,
    as a proxy rewriting errors would.
    """

    def __init__(self, status: status_pb2.Status, shown_message: str | None = None) -> None:
        super().__init__(status.message)
        self.status = status
        self.shown_message = shown_message


def rich_status(code: grpc.StatusCode, message: str, *details: Message) -> status_pb2.Status:
    """A google.rpc.Status with ``details`` packed into Any."""
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


def refuse(code: grpc.StatusCode, message: str, *details: Message) -> Refuse:
    return Refuse(rich_status(code, message, *details))


def error_info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain="stateward.dev", metadata=metadata)


def invalid_transition(agent_id: str, current: str, allowed: str, target: str = "") -> Refuse:
    """What the real server sends for a refused lifecycle move."""
    metadata = {"current_status": current, "allowed_statuses": allowed}
    if target:
        metadata["target_status"] = target
    failure = error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type="INVALID_TRANSITION", subject=f"agents/{agent_id}", description="refused"
            )
        ]
    )
    return refuse(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"agent {agent_id!r} is {current}",
        error_info("INVALID_TRANSITION", **metadata),
        failure,
    )


@dataclass
class Recorded:
    method: str
    request: Any
    metadata: dict[str, Any]


class FakeServer:
    """The fake, running on 127.0.0.1 with its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.calls: list[Recorded] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self, method: str) -> list[Any]:
        return [c.request for c in self.calls if c.method == method]

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(10)

    def start(self) -> FakeServer:
        async def start() -> int:
            self.server = grpc.aio.server()
            for module, grpc_module, name in SERVICES:
                servicer = self._servicer(module, grpc_module, name)
                getattr(grpc_module, f"add_{name}Servicer_to_server")(servicer, self.server)
            port = self.server.add_insecure_port("127.0.0.1:0")
            await self.server.start()
            return port

        self.port = self._run(start())
        return self

    def close(self) -> None:
        if self.server is not None:
            self._run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    # -- serving --------------------------------------------------------------------

    def _servicer(self, module: Any, grpc_module: Any, name: str) -> Any:
        base = getattr(grpc_module, f"{name}Servicer")
        methods = {}
        for method in module.DESCRIPTOR.services_by_name[name].methods:
            if method.server_streaming:
                methods[method.name] = self._streaming(method.name)
            else:
                methods[method.name] = self._unary(method.name)
        return type(f"Fake{name}", (base,), methods)()

    async def _answer(self, name: str, request: Any, context: Any) -> Any:
        self.calls.append(Recorded(name, request, dict(context.invocation_metadata())))
        handler = self.handlers.get(name)
        if handler is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented")
        try:
            result = handler(request)  # type: ignore[misc]
            if inspect.isawaitable(result):
                result = await result
            return result
        except Refuse as refusal:
            status = rpc_status.to_status(refusal.status)
            if refusal.shown_message is None:
                await context.abort_with_status(status)
            await context.abort(status.code, refusal.shown_message, status.trailing_metadata)

    def _unary(self, name: str) -> Any:
        async def method(servicer: Any, request: Any, context: Any) -> Any:
            return await self._answer(name, request, context)

        return method

    def _streaming(self, name: str) -> Any:
        async def method(servicer: Any, request: Any, context: Any) -> Any:
            for response in await self._answer(name, request, context):
                yield response

        return method


# -- canned messages ------------------------------------------------------------------


def agent_pb(
    agent_id: str = "a1", status: Any = lifecycle_pb2.AGENT_STATUS_ACTIVE, **fields: Any
) -> Any:
    agent = lifecycle_pb2.Agent(
        agent_id=agent_id, type="planner", status=status, etag="e1", **fields
    )
    if not agent.HasField("update_time"):
        agent.update_time.FromSeconds(1_700_000_000)
    return agent


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration
