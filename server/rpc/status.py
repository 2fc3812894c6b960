"""Domain and storage errors to gRPC statuses with google.rpc details, in one table."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from stateward.server.domain import errors as domain
from stateward.server.request_id import current_request_id
from stateward.storage import errors as storage
from stateward.v1 import common_pb2

log = logging.getLogger(__name__)

DOMAIN = "stateward.dev"

CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (domain.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (domain.NotFound, grpc.StatusCode.NOT_FOUND),
    (domain.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (domain.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (domain.Conflict, grpc.StatusCode.ABORTED),
    (domain.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (domain.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (domain.DataLoss, grpc.StatusCode.DATA_LOSS),
    (storage.StorageFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (storage.StorageUnavailable, grpc.StatusCode.UNAVAILABLE),
    (storage.DuplicateKey, grpc.StatusCode.ABORTED),
]


def code_for(error: BaseException) -> grpc.StatusCode | None:
    for kind, code in CODES:
        if isinstance(error, kind):
            return code
    return None


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


pack = _pack  # for the auth gate, which builds its statuses itself


def request_info() -> any_pb2.Any | None:
    """The call's request id as a google.rpc.RequestInfo detail (None outside a call)."""
    request_id = current_request_id()
    if not request_id:
        return None
    return _pack(error_details_pb2.RequestInfo(request_id=request_id))


def to_status(error: BaseException, code: grpc.StatusCode) -> status_pb2.Status:
    """The google.rpc.Status for a known error, with its details attached."""
    message = getattr(error, "message", None) or str(error)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if isinstance(error, domain.InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        status.details.append(_pack(bad))
    elif isinstance(error, domain.DomainError):
        info = error_details_pb2.ErrorInfo(
            reason=error.reason, domain=DOMAIN, metadata=error.metadata
        )
        status.details.append(_pack(info))
        if isinstance(error, domain.FailedPrecondition) and error.subject:
            failure = error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=error.reason, subject=error.subject, description=message
                    )
                ]
            )
            status.details.append(_pack(failure))
    else:
        reason = type(error).__name__.upper()
        status.details.append(_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)))
    info = request_info()
    if info is not None:
        status.details.append(info)
    return status


def item_status(error: Exception) -> common_pb2.ItemStatus:
    """The status of one failed request of a batch, as its own call would have ended
    (the bytes of a google.rpc.Status); unknown errors are INTERNAL, logged."""
    code = code_for(error)
    if code is None:
        return common_pb2.ItemStatus.FromString(_internal(error).SerializeToString())
    return common_pb2.ItemStatus.FromString(to_status(error, code).SerializeToString())


def _internal(error: BaseException) -> status_pb2.Status:
    log.exception("unexpected error", exc_info=error)
    request_id = current_request_id()
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; the server log has details under request id {request_id}",
    )
    info = request_info()
    if info is not None:
        status.details.append(info)
    return status


async def abort(context: grpc.aio.ServicerContext, error: BaseException) -> None:
    """Abort the call with the status for ``error``; unknown errors become INTERNAL, logged."""
    code = code_for(error)
    if code is None:
        await context.abort_with_status(rpc_status.to_status(_internal(error)))
        return
    await context.abort_with_status(rpc_status.to_status(to_status(error, code)))
