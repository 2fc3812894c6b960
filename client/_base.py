"""Everything the two clients share: options, stubs, metadata, deadlines, retries, errors.

Nothing here does I/O. ``Client`` (sync.py) and ``AsyncClient`` (aio.py) add
only opening and closing a channel and sending prepared calls; the RPC
methods themselves are written once, in the service mixins, see
``_operation.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import grpc

from stateward.v1 import (
    execution_pb2_grpc,
    lifecycle_pb2_grpc,
    recovery_pb2_grpc,
    state_pb2_grpc,
)

from ._codec import new_request_id
from ._execution import ExecutionCalls
from ._lifecycle import LifecycleCalls
from ._operation import FlowMethod, Pages, Prepared, Rpc, ServerStream, Unary
from ._options import (
    DEFAULT_TARGET,
    NAMESPACE_KEY,
    REQUEST_ID_KEY,
    ClientOptions,
    MetadataLike,
    RetryPolicy,
    TLSConfig,
)
from ._recovery import RecoveryCalls
from ._state import StateCalls
from .errors import StatewardError, UsageError, from_rpc_error


@dataclass(frozen=True, slots=True)
class Stubs:
    """The generated gRPC stubs, for calls the client does not wrap (yet)."""

    lifecycle: lifecycle_pb2_grpc.LifecycleServiceStub
    state: state_pb2_grpc.StateServiceStub
    execution: execution_pb2_grpc.ExecutionServiceStub
    recovery: recovery_pb2_grpc.RecoveryServiceStub

    @classmethod
    def for_channel(cls, channel: Any) -> Stubs:
        """Stubs over ``channel``, sync or asyncio (the generated stubs serve both)."""
        return cls(
            lifecycle=lifecycle_pb2_grpc.LifecycleServiceStub(channel),
            state=state_pb2_grpc.StateServiceStub(channel),
            execution=execution_pb2_grpc.ExecutionServiceStub(channel),
            recovery=recovery_pb2_grpc.RecoveryServiceStub(channel),
        )


class BaseClient(LifecycleCalls, StateCalls, ExecutionCalls, RecoveryCalls):
    """A Stateward client minus the sending: see ``Client`` and ``AsyncClient``."""

    def __init__(self, options: ClientOptions | None = None) -> None:
        self.options = options or ClientOptions()
        """The options this client was made with."""
        self._channel = self._open_channel(self.options)
        self._closed = False
        self.stubs = Stubs.for_channel(self._channel)
        """The raw gRPC stubs, sharing this client's channel (escape hatch).
        Calls through them get no namespace, retries or error translation."""

    @classmethod
    def connect(
        cls,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = 10.0,
        metadata: MetadataLike = (),
        namespace: str = "default",
        tls: TLSConfig | None = None,
        retry: RetryPolicy | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        token: str | None = None,
    ) -> Self:
        """A client for the server at ``target``; see ``ClientOptions`` for each option.

        The channel connects lazily: an unreachable server shows on the first
        call (as ``Unavailable``), not here.
        """
        return cls(
            ClientOptions(
                target=target,
                timeout=timeout,
                metadata=metadata,
                namespace=namespace,
                tls=tls,
                retry=retry or RetryPolicy(),
                channel_options=channel_options,
                token=token,
            )
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<{type(self).__name__} target={self.options.target!r} "
            f"namespace={self.options.namespace!r} {state}>"
        )

    # -- what the sync and async clients implement --------------------------------

    def _open_channel(self, options: ClientOptions) -> Any:
        """A channel (``grpc`` or ``grpc.aio``) to ``options.target``."""
        raise NotImplementedError

    def _bind_unary(self, op: Unary[Any, Any]) -> Callable[..., Any]:
        """``op`` as a method of this client (see ``_operation.py``)."""
        raise NotImplementedError

    def _bind_stream(self, op: ServerStream[Any, Any]) -> Callable[..., Any]:
        raise NotImplementedError

    def _bind_pages(self, op: Pages[Any, Any]) -> Callable[..., Any]:
        raise NotImplementedError

    def _bind_flow(self, op: FlowMethod[Any, Any]) -> Callable[..., Any]:
        raise NotImplementedError

    # -- shared by both when sending ----------------------------------------------

    def _method(self, rpc: Rpc) -> Callable[..., Any]:
        """The stub method of ``rpc``; UsageError once the client is closed."""
        if self._closed:
            raise UsageError(f"{self!r} is closed; connect a new client")
        return getattr(getattr(self.stubs, rpc.service), rpc.method)

    def _metadata(self, call: Prepared[Any], request_id: str) -> list[tuple[str, str | bytes]]:
        """Namespace, request id and token, then client metadata, then the call's; a later
        key replaces earlier ones."""
        if not call.metadata and not self.options.metadata:  # the usual call: nothing to merge
            return [
                (NAMESPACE_KEY, self.options.namespace),
                (REQUEST_ID_KEY, request_id),
                *self.options.auth_metadata(),
            ]
        layers = [
            [
                (NAMESPACE_KEY, self.options.namespace),
                (REQUEST_ID_KEY, request_id),
                *self.options.auth_metadata(),
            ],
            self.options.metadata,
            call.metadata,
        ]
        merged: list[tuple[str, str | bytes]] = []
        for layer in layers:
            pairs = list(layer.items() if isinstance(layer, Mapping) else layer)
            keys = {key.lower() for key, _ in pairs}
            merged = [(k, v) for k, v in merged if k not in keys]
            merged += [(key.lower(), value) for key, value in pairs]
        return merged

    def _schedule(self, call: Prepared[Any]) -> Schedule:
        timeout = call.timeout if call.timeout is not None else self.options.timeout
        return Schedule(self.options.retry, timeout)

    @staticmethod
    def _request_id(call: Prepared[Any]) -> str:
        """The id tying this call's attempts, server logs and errors together: the
        idempotency key of a mutation, a fresh id for a read."""
        return call.request_id or new_request_id()

    @staticmethod
    def _error(err: grpc.RpcError, request_id: str) -> StatewardError:
        return from_rpc_error(err, request_id=request_id)


class Schedule:
    """Deadline and retry bookkeeping of one call; the clients do the sending and waiting.

    The call's timeout covers every attempt and every wait: an attempt gets
    what is left of it, and no wait is started that would outlast it.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        timeout: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.deadline = None if timeout is None else clock() + timeout
        self.attempt = 0

    def next_timeout(self) -> float | None:
        """Start an attempt; its gRPC timeout (None: no deadline)."""
        self.attempt += 1
        if self.deadline is None:
            return None
        return max(self.deadline - self.clock(), 0.0)

    def retry_delay(self, err: grpc.RpcError) -> float | None:
        """Seconds to wait before retrying after ``err``; None to give up and raise it."""
        code = err.code() if callable(getattr(err, "code", None)) else None
        if code is None or not self.policy.should_retry(code, self.attempt):
            return None
        delay = self.policy.backoff(self.attempt)
        if self.deadline is not None and self.clock() + delay >= self.deadline:
            return None
        return delay
