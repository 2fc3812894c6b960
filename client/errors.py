"""Errors raised by the Stateward client.

Three branches, for three different reactions: fix the call, wait and retry,
or read what the server said::

    StatewardError
     +-- UsageError              the client was misused; nothing was sent (also a ValueError)
     +-- TransportError          could not reach the server, or no answer in time
     |    +-- Unavailable          UNAVAILABLE: no connection, or the server is briefly down
     |    +-- DeadlineExceeded     DEADLINE_EXCEEDED: no answer within the timeout
     +-- ServerError             the server answered and refused
          +-- NotFound             NOT_FOUND
          +-- AlreadyExists        ALREADY_EXISTS
          +-- InvalidArgument      INVALID_ARGUMENT, OUT_OF_RANGE; see .field_violations
          +-- FailedPrecondition   FAILED_PRECONDITION; see .reason and .metadata
          |    +-- InvalidTransition  reason INVALID_TRANSITION; .current_status, .allowed_statuses
          +-- Conflict             ABORTED: a compare-and-set lost; .current_version, .current_etag
          +-- PermissionDenied     PERMISSION_DENIED
          +-- Unauthenticated      UNAUTHENTICATED
          +-- ResourceExhausted    RESOURCE_EXHAUSTED
          +-- DataLoss             DATA_LOSS: stored bytes failed their integrity check
          +-- Internal             INTERNAL, UNKNOWN
          +-- Unimplemented        UNIMPLEMENTED: the server does not offer this call (yet)

Every error carries ``code`` (a ``grpc.StatusCode``; None for UsageError),
``message`` (the server's text), ``reason`` and ``details`` (the
``google.rpc.ErrorInfo`` reason and metadata, if sent), ``field_violations``
and ``precondition_violations`` (``google.rpc.BadRequest`` and
``PreconditionFailure``), and ``request_id``: the idempotency key of the
mutating call that failed (or the server's ``google.rpc.RequestInfo`` id),
which makes retrying by hand safe. The original ``grpc.RpcError`` is the
``__cause__``.

``CODE_TO_ERROR`` is the one table from gRPC codes to classes;
:func:`from_rpc_error` decodes a failed call (sync or asyncio) into them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "CODE_TO_ERROR",
    "AlreadyExists",
    "Conflict",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "InvalidTransition",
    "NotFound",
    "PermissionDenied",
    "PreconditionViolation",
    "ResourceExhausted",
    "ServerError",
    "StatewardError",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UsageError",
    "from_rpc_error",
    "from_status",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""Trailing metadata key holding the serialized ``google.rpc.Status``."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field (``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    """One unmet precondition (``google.rpc.PreconditionFailure.Violation``)."""

    type: str
    subject: str
    description: str


class StatewardError(Exception):
    """Base class of every error the client raises."""

    code: grpc.StatusCode | None = None
    """The gRPC status code this class stands for (instances carry the actual one)."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        details: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        precondition_violations: Iterable[PreconditionViolation] = (),
        request_id: str | None = None,
        retry_delay: timedelta | None = None,
        rpc_status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reason = reason
        """``google.rpc.ErrorInfo.reason``: a stable, machine-readable cause."""
        self.details: dict[str, str] = dict(details or {})
        """``google.rpc.ErrorInfo.metadata``: machine-readable facts about the failure."""
        self.field_violations = list(field_violations)
        self.precondition_violations = list(precondition_violations)
        self.request_id = request_id
        self.retry_delay = retry_delay
        """``google.rpc.RetryInfo``: how long the server asks clients to wait."""
        self.rpc_status = rpc_status
        """The raw ``google.rpc.Status``, when the server sent one."""

    def __repr__(self) -> str:
        code = self.code.name if self.code is not None else None
        return f"{type(self).__name__}({self.message!r}, code={code})"


class UsageError(StatewardError, ValueError):
    """The client was used wrongly (a bad argument, a closed client); nothing was sent."""


class TransportError(StatewardError):
    """The server could not be reached or did not answer; the request may not have arrived."""


class Unavailable(TransportError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(TransportError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ServerError(StatewardError):
    """The server answered and refused the call."""

    code = grpc.StatusCode.UNKNOWN


class NotFound(ServerError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServerError):
    code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(ServerError):
    """The request was malformed; ``field_violations`` says which fields and why."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ServerError):
    """The record is not in a state that allows the call; ``reason`` says which rule."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    @property
    def metadata(self) -> dict[str, str]:
        """The ``ErrorInfo`` metadata (the same dict as ``details``)."""
        return self.details


class InvalidTransition(FailedPrecondition):
    """The lifecycle state machine forbids the move (reason ``INVALID_TRANSITION``)."""

    @property
    def current_status(self) -> str:
        """The agent's status when the call was refused, e.g. ``"PAUSED"``."""
        return self.details.get("current_status", "")

    @property
    def target_status(self) -> str | None:
        """The status the call tried to reach, when the server said."""
        return self.details.get("target_status") or None

    @property
    def allowed_statuses(self) -> list[str]:
        """Where the agent may move from ``current_status``; empty when it is terminal."""
        return [s for s in self.details.get("allowed_statuses", "").split(",") if s]


class Conflict(ServerError):
    """A compare-and-set lost (ABORTED): re-read, then retry with the fresh version or etag."""

    code = grpc.StatusCode.ABORTED

    @property
    def current_version(self) -> int | None:
        """The stored state version (reason ``VERSION_CONFLICT``), when the server said."""
        value = self.details.get("current_version", "")
        try:
            return int(value)
        except ValueError:
            return None

    @property
    def current_etag(self) -> str | None:
        """The record's current etag (reason ``ETAG_MISMATCH``), when the server said."""
        return self.details.get("current_etag") or None


class PermissionDenied(ServerError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServerError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ServerError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DataLoss(ServerError):
    code = grpc.StatusCode.DATA_LOSS


class Internal(ServerError):
    code = grpc.StatusCode.INTERNAL


class Unimplemented(ServerError):
    code = grpc.StatusCode.UNIMPLEMENTED


_S = grpc.StatusCode
CODE_TO_ERROR: dict[grpc.StatusCode, type[StatewardError]] = {
    _S.CANCELLED: TransportError,
    _S.UNKNOWN: Internal,
    _S.INVALID_ARGUMENT: InvalidArgument,
    _S.DEADLINE_EXCEEDED: DeadlineExceeded,
    _S.NOT_FOUND: NotFound,
    _S.ALREADY_EXISTS: AlreadyExists,
    _S.PERMISSION_DENIED: PermissionDenied,
    _S.RESOURCE_EXHAUSTED: ResourceExhausted,
    _S.FAILED_PRECONDITION: FailedPrecondition,
    _S.ABORTED: Conflict,
    _S.OUT_OF_RANGE: InvalidArgument,
    _S.UNIMPLEMENTED: Unimplemented,
    _S.INTERNAL: Internal,
    _S.UNAVAILABLE: Unavailable,
    _S.DATA_LOSS: DataLoss,
    _S.UNAUTHENTICATED: Unauthenticated,
}
"""The one mapping from gRPC status codes to error classes."""

REASON_TO_ERROR: dict[str, type[StatewardError]] = {
    "INVALID_TRANSITION": InvalidTransition,
}
"""``ErrorInfo`` reasons that refine the class chosen by code."""


# -- decoding ------------------------------------------------------------------


@dataclass(slots=True)
class _Details:
    """What the ``google.rpc.Status`` details of a failure said."""

    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[FieldViolation] = field(default_factory=list)
    precondition_violations: list[PreconditionViolation] = field(default_factory=list)
    request_id: str | None = None
    retry_delay: timedelta | None = None


def from_rpc_error(err: grpc.RpcError, *, request_id: str | None = None) -> StatewardError:
    """The client error for a failed call, sync (``grpc.Call``) or asyncio (``AioRpcError``).

    ``request_id`` is the idempotency key the call was sent with, if any.
    """
    code = _call_code(err)
    return _error(code, _call_attr(err, "details") or code.name, rich_status(err), request_id)


def from_status(status: status_pb2.Status) -> StatewardError:
    """The client error for a ``google.rpc.Status``: one failed request of a batch call."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return _error(code, status.message or code.name, status, None)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _error(
    code: grpc.StatusCode,
    message: str,
    status: status_pb2.Status | None,
    request_id: str | None,
) -> StatewardError:
    parts = _decode_details(status)
    cls = CODE_TO_ERROR.get(code, ServerError)
    refined = REASON_TO_ERROR.get(parts.reason)
    if refined is not None and issubclass(refined, cls):
        cls = refined
    return cls(
        message,
        code=code,
        reason=parts.reason,
        details=parts.metadata,
        field_violations=parts.field_violations,
        precondition_violations=parts.precondition_violations,
        request_id=parts.request_id or request_id,
        retry_delay=parts.retry_delay,
        rpc_status=status,
    )


def rich_status(err: grpc.RpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` a failed call carried in its trailing metadata, if any."""
    if isinstance(err, grpc.Call):
        try:
            return rpc_status.from_call(err)  # checks code and message agree with the status
        except ValueError:
            pass  # rewritten by a proxy on the way: trust the details anyway
    # grpc.aio.AioRpcError is no grpc.Call: read the trailing metadata directly.
    trailing = _call_attr(err, "trailing_metadata") or ()
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None


def _decode_details(status: status_pb2.Status | None) -> _Details:
    parts = _Details()
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            parts.reason = info.reason
            parts.metadata.update(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            parts.field_violations += [
                FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            parts.precondition_violations += [
                PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations
            ]
        elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            info_r = error_details_pb2.RequestInfo()
            detail.Unpack(info_r)
            parts.request_id = info_r.request_id or None
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            parts.retry_delay = retry.retry_delay.ToTimedelta()
    return parts


def _call_code(err: grpc.RpcError) -> grpc.StatusCode:
    code = _call_attr(err, "code")
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _call_attr(err: grpc.RpcError, name: str) -> Any:
    """``err.<name>()``; None when a bare RpcError (not a call) lacks it."""
    method = getattr(err, name, None)
    return method() if callable(method) else None
