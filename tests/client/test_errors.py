"""Failed calls become the documented error classes, with their rich details decoded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from stateward.client import errors
from stateward.client.errors import (
    CODE_TO_ERROR,
    Conflict,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    InvalidTransition,
    NotFound,
    ServerError,
    StatewardError,
    TransportError,
    Unimplemented,
    from_rpc_error,
)
from stateward.v1 import lifecycle_pb2
from tests.client.fakes import (
    FakeServer,
    Refuse,
    agent_pb,
    error_info,
    invalid_transition,
    refuse,
    rich_status,
)

TRANSPORT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}


class AioLikeError(grpc.RpcError):
    """Like grpc.aio.AioRpcError: code(), details(), trailing_metadata(), but no grpc.Call."""

    def __init__(self, code: grpc.StatusCode, message: str, trailing: Any = ()) -> None:
        self._code, self._message, self._trailing = code, message, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> Any:
        return self._trailing


# -- the table ------------------------------------------------------------------------


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_every_code_has_a_class_on_the_right_branch(code: grpc.StatusCode) -> None:
    cls = CODE_TO_ERROR[code]
    branch = TransportError if code in TRANSPORT_CODES else ServerError
    assert issubclass(cls, branch)

    error = from_rpc_error(AioLikeError(code, "boom"))
    assert type(error) is cls
    assert error.code is code
    assert error.message == "boom"
    assert error.details == {} and error.reason == "" and error.rpc_status is None


def test_documented_tree() -> None:
    assert issubclass(errors.Unavailable, TransportError)
    assert issubclass(errors.DeadlineExceeded, TransportError)
    assert issubclass(InvalidTransition, FailedPrecondition)
    assert issubclass(FailedPrecondition, ServerError)
    assert issubclass(Conflict, ServerError)
    assert issubclass(errors.UsageError, ValueError)
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, StatewardError)
            assert name in (errors.__doc__ or ""), f"{name} is missing from the drawn tree"


def test_errors_can_be_built_by_hand_for_tests_of_callers() -> None:
    error = InvalidTransition(
        "no", details={"current_status": "PAUSED", "allowed_statuses": "ACTIVE,ERROR"}
    )
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.current_status == "PAUSED"
    assert error.allowed_statuses == ["ACTIVE", "ERROR"]
    assert error.metadata is error.details
    assert "InvalidTransition('no', code=FAILED_PRECONDITION)" == repr(error)


# -- decoding without a server (the asyncio path reads trailing metadata) --------------


def test_decodes_rich_status_from_trailing_metadata() -> None:
    status = rich_status(
        grpc.StatusCode.ABORTED,
        "state of 'a1' is at version 7",
        error_info("VERSION_CONFLICT", current_version="7"),
        error_details_pb2.RequestInfo(request_id="req-1"),
    )
    trailing = (("grpc-status-details-bin", status.SerializeToString()),)
    error = from_rpc_error(AioLikeError(grpc.StatusCode.ABORTED, status.message, trailing))

    assert isinstance(error, Conflict)
    assert error.reason == "VERSION_CONFLICT"
    assert error.current_version == 7
    assert error.current_etag is None
    assert error.request_id == "req-1"
    assert error.rpc_status == status


def test_unknown_reason_keeps_the_class_of_the_code() -> None:
    status = rich_status(grpc.StatusCode.FAILED_PRECONDITION, "x", error_info("AGENT_TERMINATED"))
    trailing = (("grpc-status-details-bin", status.SerializeToString()),)
    error = from_rpc_error(AioLikeError(grpc.StatusCode.FAILED_PRECONDITION, "x", trailing))
    assert type(error) is FailedPrecondition
    assert error.reason == "AGENT_TERMINATED"


# -- end to end over loopback, sync and asyncio ------------------------------------------


def test_invalid_transition(fake: FakeServer, call: Callable[..., Any]) -> None:
    def refuse_pause(request: Any) -> Any:
        raise invalid_transition(request.agent_id, "PAUSED", "ACTIVE,TERMINATED,ERROR")

    fake.handlers["InitializeAgent"] = refuse_pause
    with pytest.raises(InvalidTransition) as caught:
        call("initialize_agent", "a1", request_id="r-42")

    error = caught.value
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.current_status == "PAUSED"
    assert error.allowed_statuses == ["ACTIVE", "TERMINATED", "ERROR"]
    assert error.target_status is None
    assert error.reason == "INVALID_TRANSITION"
    assert error.precondition_violations[0].subject == "agents/a1"
    assert error.request_id == "r-42"
    assert isinstance(error.__cause__, grpc.RpcError)


def test_field_violations(fake: FakeServer, call: Callable[..., Any]) -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="agent_id", description="too long"),
            error_details_pb2.BadRequest.FieldViolation(field="type", description="required"),
        ]
    )

    def reject(request: Any) -> Any:
        raise refuse(grpc.StatusCode.INVALID_ARGUMENT, "invalid request", bad)

    fake.handlers["CreateAgent"] = reject
    with pytest.raises(InvalidArgument) as caught:
        call("create_agent", "x" * 200, "")
    assert caught.value.field_violations == [
        FieldViolation("agent_id", "too long"),
        FieldViolation("type", "required"),
    ]
    assert caught.value.message == "invalid request"


def test_etag_conflict(fake: FakeServer, call: Callable[..., Any]) -> None:
    def stale(request: Any) -> Any:
        raise refuse(
            grpc.StatusCode.ABORTED, "etag mismatch", error_info("ETAG_MISMATCH", current_etag="e9")
        )

    fake.handlers["UpdateAgent"] = stale
    with pytest.raises(Conflict) as caught:
        call("update_agent", "a1", labels={}, etag="e1")
    assert caught.value.current_etag == "e9"
    assert caught.value.current_version is None


def test_plain_status_without_details(fake: FakeServer, call: Callable[..., Any]) -> None:
    def missing(request: Any) -> Any:
        raise refuse(grpc.StatusCode.NOT_FOUND, f"agent {request.agent_id!r} not found")

    fake.handlers["GetAgent"] = missing
    with pytest.raises(NotFound, match="agent 'ghost' not found") as caught:
        call("get_agent", "ghost")
    assert caught.value.details == {}
    # A read sends a generated request id (x-request-id), reported on the error.
    assert caught.value.request_id == fake.calls[-1].metadata["x-request-id"]


def test_unimplemented_rpc(call: Callable[..., Any]) -> None:
    with pytest.raises(Unimplemented, match="RecoverAgent is not implemented"):
        call("recover_agent", "a1")


def test_status_that_disagrees_with_the_call_is_still_decoded(
    fake: FakeServer, call: Callable[..., Any]
) -> None:
    status = rich_status(grpc.StatusCode.NOT_FOUND, "inner", error_info("WHATEVER", k="v"))

    def rewritten(request: Any) -> Any:
        raise Refuse(status, shown_message="rewritten by a proxy")

    fake.handlers["GetAgent"] = rewritten
    with pytest.raises(NotFound, match="rewritten by a proxy") as caught:
        call("get_agent", "a1")
    assert caught.value.details == {"k": "v"}
    assert caught.value.rpc_status == status


def test_an_answer_is_not_an_error(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["GetAgent"] = lambda request: lifecycle_pb2.GetAgentResponse(agent=agent_pb())
    assert call("get_agent", "a1").agent_id == "a1"


def test_a_batch_item_status_maps_like_a_call_status() -> None:
    # What one failed request of a batch call carries (ItemStatus has Status's fields).
    status = rich_status(
        grpc.StatusCode.NOT_FOUND,
        "agent 'a1' not found",
        error_info("AGENT_NOT_FOUND", agent_id="a1"),
        error_details_pb2.RequestInfo(request_id="req-9"),
    )
    error = errors.from_status(status)
    assert isinstance(error, NotFound)
    assert (error.code, error.reason, error.details, error.request_id) == (
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
        {"agent_id": "a1"},
        "req-9",
    )
    assert str(error).startswith("agent 'a1' not found")
    bad = errors.from_status(
        rich_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid",
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="labels", description="x")
                ]
            ),
        )
    )
    assert isinstance(bad, InvalidArgument)
    assert bad.field_violations == [FieldViolation("labels", "x")]
    unknown = errors.from_status(rich_status(grpc.StatusCode.UNKNOWN, ""))
    assert isinstance(unknown, ServerError) and unknown.code is grpc.StatusCode.UNKNOWN
