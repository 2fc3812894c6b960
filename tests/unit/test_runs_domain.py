"""Workflow-run and task-run rules, without a server."""

from __future__ import annotations

import pytest

from stateward.server.domain import runs as rules
from stateward.server.domain.errors import FailedPrecondition, Violations
from stateward.server.domain.runs import RunStatus, TaskStatus
from stateward.server.domain.validation import ID_PATTERN

S = rules.SECOND

RUN_EDGES = {
    (RunStatus.PENDING, RunStatus.RUNNING),
    (RunStatus.PENDING, RunStatus.CANCELLED),
    (RunStatus.RUNNING, RunStatus.COMPLETED),
    (RunStatus.RUNNING, RunStatus.FAILED),
    (RunStatus.RUNNING, RunStatus.CANCELLED),
    (RunStatus.RUNNING, RunStatus.INTERRUPTED),
}


@pytest.mark.parametrize("current", list(RunStatus))
@pytest.mark.parametrize("target", list(RunStatus))
def test_run_status_machine_allows_exactly_the_documented_moves(
    current: RunStatus, target: RunStatus
) -> None:
    assert rules.run_can_move(current, target) == ((current, target) in RUN_EDGES)


@pytest.mark.parametrize("current", list(TaskStatus))
@pytest.mark.parametrize("target", list(TaskStatus))
def test_task_runs_only_leave_running(current: TaskStatus, target: TaskStatus) -> None:
    expected = current is TaskStatus.RUNNING and target is not TaskStatus.RUNNING
    assert rules.task_can_move(current, target) == expected


def test_refused_run_move_names_current_status_and_allowed_targets() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        rules.require_run_move("run-1", "COMPLETED", RunStatus.FAILED)
    error = caught.value
    assert error.reason == "INVALID_RUN_STATUS"
    assert error.metadata == {
        "current_status": "COMPLETED",
        "target_status": "FAILED",
        "allowed_statuses": "",
    }
    assert "COMPLETED" in error.message and "final" in error.message
    rules.require_run_move("run-1", "RUNNING", RunStatus.CANCELLED)  # allowed: no error


def test_refused_task_action_names_its_status() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        rules.require_task_running("task-1", "TIMED_OUT", "heartbeat")
    assert caught.value.reason == "INVALID_TASK_STATUS"
    assert caught.value.metadata["current_status"] == "TIMED_OUT"
    rules.require_task_running("task-1", "RUNNING", "heartbeat")


def test_task_runs_start_only_in_running_runs() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        rules.require_run_running("run-1", "CANCELLED")
    assert caught.value.reason == "INVALID_RUN_STATUS"
    rules.require_run_running("run-1", "RUNNING")


def test_cancellation_turns_failures_and_expiries_into_cancelled() -> None:
    assert rules.failure_status(False) is TaskStatus.FAILED
    assert rules.failure_status(True) is TaskStatus.CANCELLED
    assert rules.expiry_status(False) is TaskStatus.TIMED_OUT
    assert rules.expiry_status(True) is TaskStatus.CANCELLED


@pytest.mark.parametrize(
    ("timeout", "heartbeat", "last", "expected"),
    [
        (10 * S, None, None, 110 * S),  # overall timeout only
        (None, 3 * S, None, 103 * S),  # heartbeat from start
        (None, 3 * S, 105 * S, 108 * S),  # heartbeat from the last one
        (10 * S, 3 * S, 109 * S, 110 * S),  # the overall timeout caps renewals
        (10 * S, 30 * S, None, 110 * S),
        (None, None, None, None),
    ],
)
def test_lease_is_the_earlier_of_both_bounds(
    timeout: int | None, heartbeat: int | None, last: int | None, expected: int | None
) -> None:
    assert rules.lease_expiry(100 * S, timeout, last, heartbeat) == expected


def test_a_task_without_any_timeout_gets_the_default_heartbeat_lease() -> None:
    assert rules.effective_timeouts(None, None) == (None, rules.DEFAULT_HEARTBEAT_TIMEOUT_US)
    assert rules.effective_timeouts(5 * S, None) == (5 * S, None)
    assert rules.effective_timeouts(None, 2 * S) == (None, 2 * S)


def test_lease_expired_is_strict_and_never_for_no_lease() -> None:
    assert not rules.lease_expired(None, 10**18)
    assert not rules.lease_expired(100, 100)
    assert rules.lease_expired(100, 101)


def test_expiry_message_names_the_timeout_that_ran_out() -> None:
    overall = rules.expiry_message(0, 2 * S, 5 * S, 2 * S)
    assert "timeout of 2 s" in overall and "heartbeat" not in overall
    heartbeat = rules.expiry_message(0, 60 * S, int(1.5 * S), 4 * S)
    assert "heartbeat timeout of 1.5 s" in heartbeat


def test_interruption_grace_covers_two_sweeps_and_a_second() -> None:
    assert rules.interruption_grace_us(0.05) == int(1.1 * S)
    assert rules.interruption_grace_us(1.0) == 3 * S


def test_ids_are_valid_unique_and_sort_by_time() -> None:
    ids = [rules.new_run_id(1_700_000_000_000_000 + i * 1000) for i in range(50)]
    assert len(set(ids)) == 50
    assert ids == sorted(ids)
    for value in ids:
        assert value.startswith("run-") and len(value) == 4 + 26
        assert ID_PATTERN.fullmatch(value)
    task = rules.new_task_run_id(1_700_000_000_000_000)
    assert task.startswith("task-") and ID_PATTERN.fullmatch(task)
    same_ms = {rules.new_run_id(1_700_000_000_000_000) for _ in range(100)}
    assert len(same_ms) == 100  # 80 random bits keep ids of one millisecond apart


@pytest.mark.parametrize("name", ["step_started", "tool.call", "a", "llm:token-count", "X" * 128])
def test_client_event_types_accepted(name: str) -> None:
    v = Violations()
    rules.check_event_type(v, "type", name)
    assert v.items == []


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("", "1 to 128"),
        ("1step", "starting with a letter"),
        ("has space", "1 to 128"),
        ("X" * 129, "1 to 128"),
        ("run.started", "system prefix"),
        ("task.custom", "system prefix"),
        ("checkpoint.x", "system prefix"),
        ("agent.created", "system prefix"),
        ("state.saved", "system prefix"),
    ],
)
def test_client_event_types_refused(name: str, hint: str) -> None:
    v = Violations()
    rules.check_event_type(v, "events[0].type", name)
    assert len(v.items) == 1
    assert v.items[0].field == "events[0].type"
    assert hint in v.items[0].description


def test_durations_must_be_positive_and_bounded() -> None:
    v = Violations()
    rules.check_duration(v, "timeout", None)
    rules.check_duration(v, "timeout", 1)
    assert v.items == []
    rules.check_duration(v, "timeout", 0)
    rules.check_duration(v, "heartbeat_timeout", -5)
    rules.check_duration(v, "timeout", rules.MAX_TIMEOUT_US + 1)
    assert [item.field for item in v.items] == ["timeout", "heartbeat_timeout", "timeout"]
