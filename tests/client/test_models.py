"""Proto messages become the client's dataclasses: exact JSON, aware UTC times, str enums."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateward.client import (
    Agent,
    AgentStatus,
    ErrorKind,
    Page,
    RecoveryPlan,
    RecoveryStrategy,
    RunStatus,
    StateVersion,
    TaskRun,
    TaskStatus,
    Transition,
    UsageError,
)
from stateward.client._codec import decode_object, encode_json
from stateward.client.models import from_proto_enum, to_proto_enum
from stateward.v1 import common_pb2, execution_pb2, lifecycle_pb2, recovery_pb2, state_pb2
from tests.client.fakes import seconds

BIG = 2**63 + 1  # beyond a double's 2^53 and beyond int64
CREATED = lifecycle_pb2.AGENT_STATUS_CREATED


def test_agent_from_proto() -> None:
    config = {"big": BIG, "neg": -(2**70), "nested": {"list": [1, 2.5, None, "é"]}, "ok": True}
    msg = lifecycle_pb2.Agent(
        agent_id="a1",
        type="planner",
        status=lifecycle_pb2.AGENT_STATUS_PAUSED,
        config_json=encode_json(config),
        labels={"team": "x"},
        etag="e7",
        state_version=3,
    )
    msg.create_time.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    msg.pause_time.FromSeconds(1_800_000_000)

    agent = Agent.from_proto(msg)

    assert agent.config == config
    assert agent.config["big"] == BIG and type(agent.config["big"]) is int
    assert agent.status is AgentStatus.PAUSED and agent.status == "PAUSED"
    assert agent.labels == {"team": "x"}
    assert (agent.etag, agent.state_version) == ("e7", 3)
    assert agent.create_time == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert agent.create_time.tzinfo is not None and agent.create_time.utcoffset() == timedelta(0)
    assert agent.pause_time == datetime.fromtimestamp(1_800_000_000, UTC)
    # Unset times are None, not 1970.
    assert agent.update_time is None and agent.terminate_time is None
    assert agent.last_error is None


def test_agent_is_frozen() -> None:
    agent = Agent.from_proto(lifecycle_pb2.Agent(agent_id="a", status=CREATED))
    with pytest.raises(dataclasses.FrozenInstanceError):
        agent.status = AgentStatus.ACTIVE  # type: ignore[misc]
    assert agent.config == {}  # empty config_json is {}


def test_last_error() -> None:
    msg = lifecycle_pb2.Agent(
        agent_id="a",
        status=lifecycle_pb2.AGENT_STATUS_ERROR,
        last_error=common_pb2.ErrorDetail(
            message="model timed out",
            kind=common_pb2.ERROR_KIND_TIMEOUT,
            retryable=True,
            details_json=b'{"after_s":30}',
        ),
    )
    error = Agent.from_proto(msg).last_error
    assert error is not None
    assert (error.message, error.kind, error.retryable) == ("model timed out", "TIMEOUT", True)
    assert error.kind is ErrorKind.TIMEOUT
    assert error.details == {"after_s": 30}
    assert error.time is None


def test_transition_from_creation_record() -> None:
    msg = lifecycle_pb2.Transition(
        transition_id=1, agent_id="a", to_status=lifecycle_pb2.AGENT_STATUS_CREATED
    )
    transition = Transition.from_proto(msg)
    assert transition.from_status is None  # UNSPECIFIED: the creation record
    assert transition.to_status is AgentStatus.CREATED


def test_state_version_document() -> None:
    listed = StateVersion.from_proto(state_pb2.StateVersion(agent_id="a", version=2))
    assert listed.document is None  # listed without documents
    full = StateVersion.from_proto(
        state_pb2.StateVersion(agent_id="a", version=2, document_json=encode_json({"n": BIG}))
    )
    assert full.document == {"n": BIG}


def test_task_run_durations_and_values() -> None:
    msg = execution_pb2.TaskRun(
        task_run_id="t1",
        status=execution_pb2.TASK_STATUS_TIMED_OUT,
        input_json=b"[1,2]",
        result_json=b"",
        timeout=seconds(90),
    )
    task = TaskRun.from_proto(msg)
    assert task.status is TaskStatus.TIMED_OUT
    assert task.input == [1, 2]
    assert task.result is None  # empty value field
    assert task.timeout == timedelta(seconds=90)
    assert task.heartbeat_timeout is None


def test_recovery_plan() -> None:
    msg = recovery_pb2.RecoveryPlan(
        agent_id="a",
        agent_status=lifecycle_pb2.AGENT_STATUS_ERROR,
        strategy=recovery_pb2.RECOVERY_STRATEGY_RETRY_WITH_LONGER_TIMEOUT,
        suggested_timeout=seconds(60),
        failed_task_runs=[
            execution_pb2.TaskRun(task_run_id="t", status=execution_pb2.TASK_STATUS_FAILED)
        ],
        explanation="timed out",
    )
    plan = RecoveryPlan.from_proto(msg)
    assert plan.strategy is RecoveryStrategy.RETRY_WITH_LONGER_TIMEOUT
    assert plan.suggested_timeout == timedelta(seconds=60)
    assert plan.last_failure is None and plan.checkpoint is None
    assert [t.task_run_id for t in plan.failed_task_runs] == ["t"]


def test_page() -> None:
    page: Page[int] = Page([1, 2], "next")
    assert list(page) == [1, 2] and len(page) == 2 and page.has_next
    assert not Page([]).has_next


@pytest.mark.parametrize("given_value", ["paused", "PAUSED", AgentStatus.PAUSED])
def test_enum_names_any_case(given_value: Any) -> None:
    assert to_proto_enum(AgentStatus, given_value) == "AGENT_STATUS_PAUSED"


def test_enum_none_is_unspecified_and_unknown_is_a_usage_error() -> None:
    assert to_proto_enum(AgentStatus, None) == "AGENT_STATUS_UNSPECIFIED"
    assert from_proto_enum(AgentStatus, 0) is None
    with pytest.raises(UsageError, match="expected one of CREATED, INITIALIZED"):
        to_proto_enum(AgentStatus, "sleeping")


def test_every_proto_enum_value_has_a_member() -> None:
    pairs: list[tuple[type, Any]] = [
        (AgentStatus, lifecycle_pb2.AgentStatus),
        (ErrorKind, common_pb2.ErrorKind),
        (RunStatus, execution_pb2.RunStatus),
        (TaskStatus, execution_pb2.TaskStatus),
        (RecoveryStrategy, recovery_pb2.RecoveryStrategy),
    ]
    for cls, proto_enum in pairs:
        for number in proto_enum.values():
            if number:
                assert isinstance(from_proto_enum(cls, number), cls)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_json_objects_round_trip_exactly(document: dict[str, Any]) -> None:
    msg = lifecycle_pb2.Agent(agent_id="a", status=CREATED, config_json=encode_json(document))
    assert Agent.from_proto(msg).config == document
    assert decode_object(encode_json(document)) == document
