"""The lesson's manager classes against a live server (SQLite and PostgreSQL).

Every method, its lesson-style answer and each failure shape the lesson defines
(False, None, ``no_state``, ``checkpoint_not_found``...), plus the places where
the server's rules are stricter than the lesson (documented in
docs/notes/ecosystem.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from stateward.client import (
    AlreadyExists,
    Client,
    ErrorKind,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from stateward.client.managers import (
    AgentState,
    ExecutionTracker,
    LifecycleManager,
    RecoveryManager,
    StateManager,
)
from tests.support.server import ServerThread


@pytest.fixture
def client(server: ServerThread) -> Iterator[Client]:
    with Client.connect(server.target, timeout=10) as c:
        yield c


@pytest.fixture
def lifecycle(client: Client) -> LifecycleManager:
    return LifecycleManager(client)


@pytest.fixture
def states(client: Client) -> StateManager:
    return StateManager(client)


@pytest.fixture
def tracker(client: Client) -> ExecutionTracker:
    return ExecutionTracker(client)


@pytest.fixture
def recovery(states: StateManager, tracker: ExecutionTracker) -> RecoveryManager:
    return RecoveryManager(states, tracker)


def test_agent_state_enum_has_the_lessons_values() -> None:
    assert [s.value for s in AgentState] == [
        "created",
        "initialized",
        "active",
        "paused",
        "terminated",
        "error",
    ]
    assert AgentState.from_status("PAUSED") is AgentState.PAUSED


# -- LifecycleManager ----------------------------------------------------------------


def test_lifecycle_walk_returns_true_and_records_follow(lifecycle: LifecycleManager) -> None:
    assert lifecycle.create_agent("a1", "planner", {"model": "m", "big": 2**60}) == "a1"
    record = lifecycle.agents["a1"]
    assert record["state"] is AgentState.CREATED
    assert record["type"] == "planner"
    assert record["config"] == {"model": "m", "big": 2**60}
    assert isinstance(record["created_at"], datetime) and record["initialized_at"] is None

    assert lifecycle.initialize_agent("a1") is True
    assert lifecycle.activate_agent("a1") is True
    assert lifecycle.pause_agent("a1") is True
    assert lifecycle.get_agent_state("a1") is AgentState.PAUSED
    assert lifecycle.activate_agent("a1") is True  # from paused: the server's resume
    assert lifecycle.get_agent_state("a1") is AgentState.ACTIVE
    assert lifecycle.terminate_agent("a1") is True
    record = lifecycle.agents["a1"]
    assert record["state"] is AgentState.TERMINATED
    assert record["initialized_at"] is not None and record["terminated_at"] is not None
    assert "a1" in lifecycle.agents and list(lifecycle.agents) == ["a1"]
    assert len(lifecycle.agents) == 1


def test_lifecycle_refusals_and_missing_agents_return_false(lifecycle: LifecycleManager) -> None:
    for move in (
        lifecycle.initialize_agent,
        lifecycle.activate_agent,
        lifecycle.pause_agent,
        lifecycle.terminate_agent,
    ):
        assert move("nobody") is False
        assert move("not a valid id!") is False

    lifecycle.create_agent("a2", "planner", {})
    assert lifecycle.activate_agent("a2") is False  # created -> active is not allowed
    assert lifecycle.pause_agent("a2") is False  # only active agents pause
    assert lifecycle.initialize_agent("a2") is True
    assert lifecycle.initialize_agent("a2") is False  # the lesson re-initialized anything
    assert lifecycle.pause_agent("a2") is False
    assert lifecycle.terminate_agent("a2") is True
    assert lifecycle.terminate_agent("a2") is False  # terminal: the lesson said True again
    assert lifecycle.initialize_agent("a2") is False
    assert lifecycle.activate_agent("a2") is False
    assert lifecycle.get_agent_state("nobody") is None
    assert "nobody" not in lifecycle.agents and 42 not in lifecycle.agents
    with pytest.raises(KeyError):
        lifecycle.agents["nobody"]


def test_initialize_after_error_is_the_servers_reset(
    lifecycle: LifecycleManager, client: Client
) -> None:
    lifecycle.create_agent("a3", "planner", {})
    lifecycle.initialize_agent("a3")
    client.report_error("a3", "model provider down", kind=ErrorKind.DEPENDENCY)
    assert lifecycle.get_agent_state("a3") is AgentState.ERROR
    assert lifecycle.activate_agent("a3") is False
    assert lifecycle.initialize_agent("a3") is True
    assert lifecycle.get_agent_state("a3") is AgentState.INITIALIZED


def test_create_agent_keeps_the_servers_rules(lifecycle: LifecycleManager) -> None:
    lifecycle.create_agent("a4", "planner", {})
    with pytest.raises(AlreadyExists):
        lifecycle.create_agent("a4", "planner", {})  # the lesson overwrote silently
    with pytest.raises(InvalidArgument):
        lifecycle.create_agent("bad id", "planner", {})


def test_manager_from_a_target_string_owns_its_client(server: ServerThread) -> None:
    with LifecycleManager(server.target) as manager:
        assert manager.create_agent("own", "t", {}) == "own"
        assert manager.initialize_agent("own") is True
    assert manager.client._closed


# -- StateManager --------------------------------------------------------------------


def test_state_save_load_clear(
    lifecycle: LifecycleManager, states: StateManager, client: Client
) -> None:
    lifecycle.create_agent("s1", "planner", {})
    assert states.load_agent_state("s1") is None
    states.save_agent_state("s1", {"step": 1, "big": 2**63})
    assert states.load_agent_state("s1") == {"step": 1, "big": 2**63}

    loaded = states.load_agent_state("s1")
    assert loaded is not None
    loaded["step"] = 99  # a caller's edits never leak into the cache
    assert states.load_agent_state("s1") == {"step": 1, "big": 2**63}

    states.clear_agent_state("s1")
    assert states.load_agent_state("s1") is None
    states.clear_agent_state("s1")  # clearing twice is fine
    states.clear_agent_state("nobody")  # and so is an unknown agent, as in the lesson
    assert states.load_agent_state("nobody") is None


def test_state_cache_is_never_stale(
    lifecycle: LifecycleManager, states: StateManager, client: Client
) -> None:
    lifecycle.create_agent("s2", "planner", {})
    states.save_agent_state("s2", {"v": 1})
    assert states.load_agent_state("s2") == {"v": 1}
    assert states.cache["s2"].version == 1

    client.save_state("s2", {"v": 2})  # another process writes
    assert states.load_agent_state("s2") == {"v": 2}
    other = StateManager(client)
    other.save_agent_state("s2", {"v": 3})
    assert states.load_agent_state("s2") == {"v": 3}
    client.clear_state("s2")
    assert states.load_agent_state("s2") is None

    # Same id, new agent: version numbers start again, the cache must not mix them up.
    states.save_agent_state("s2", {"v": "old agent"})
    client.terminate_agent("s2")
    client.delete_agent("s2")
    client.create_agent("s2", "planner")
    client.save_state("s2", {"v": "new agent"})
    assert states.load_agent_state("s2") == {"v": "new agent"}


def test_state_writes_follow_the_servers_rules(
    lifecycle: LifecycleManager, states: StateManager
) -> None:
    with pytest.raises(NotFound):
        states.save_agent_state("nobody", {"x": 1})  # the lesson stored anything
    lifecycle.create_agent("s3", "planner", {})
    states.save_agent_state("s3", {"x": 1})
    lifecycle.terminate_agent("s3")
    with pytest.raises(FailedPrecondition):
        states.save_agent_state("s3", {"x": 2})
    with pytest.raises(FailedPrecondition):
        states.clear_agent_state("s3")
    assert states.load_agent_state("s3") == {"x": 1}  # still readable


# -- ExecutionTracker ----------------------------------------------------------------


def test_execution_history_in_the_lessons_shape(
    lifecycle: LifecycleManager, tracker: ExecutionTracker, client: Client
) -> None:
    lifecycle.create_agent("e1", "worker", {})
    assert tracker.get_execution_history("e1") == []
    first = tracker.start_execution("wf-1", "e1", "fetch")
    tracker.log_event(first, "step_started", {"step": "fetch"})
    tracker.log_event(first, "step_completed", {"step": "fetch", "rows": 3})
    assert client.get_task_run(first).last_heartbeat_time is not None  # logging is a heartbeat
    tracker.complete_execution(first, {"rows": 3})
    tracker.log_event(first, "note", {"late": True})  # recorded after completion too
    second = tracker.start_execution("wf-1", "e1", "summarize")

    history = tracker.get_execution_history("e1")
    assert [h["id"] for h in history] == [first, second]  # oldest first, like the lesson
    done, running = history
    assert done["task_id"] == "fetch" and done["status"] == "completed"
    assert done["result"] == {"rows": 3}
    assert datetime.fromisoformat(done["started_at"]) <= datetime.fromisoformat(
        done["completed_at"]
    )
    assert running["status"] == "running" and running["completed_at"] is None
    assert running["result"] is None
    assert set(done) >= {"id", "task_id", "status", "started_at", "completed_at", "result"}

    events = [e.type for e in client.iter_events(task_run_id=first)]
    assert events == ["task.started", "step_started", "step_completed", "task.completed", "note"]
    run = client.get_workflow_run(client.get_task_run(first).run_id)
    assert run.workflow_name == "wf-1" and run.status == "COMPLETED"
    assert run.result == {"rows": 3}


def test_execution_task_timeout_option(lifecycle: LifecycleManager, client: Client) -> None:
    lifecycle.create_agent("e4", "worker", {})
    patient = ExecutionTracker(client, task_timeout=3600)
    task = client.get_task_run(patient.start_execution("wf-4", "e4", "long"))
    assert task.timeout is not None and task.timeout.total_seconds() == 3600


def test_execution_failure_and_cancel(
    lifecycle: LifecycleManager, tracker: ExecutionTracker, client: Client
) -> None:
    lifecycle.create_agent("e2", "worker", {})
    failed = tracker.start_execution("wf-2", "e2", "call-model")
    tracker.complete_execution(failed, {"error": "model timeout after 30s"}, status="failed")
    entry = tracker.get_execution_history("e2")[-1]
    assert entry["status"] == "failed" and entry["completed_at"] is not None
    assert entry["result"] == {"error": "model timeout after 30s"}
    assert entry["error"] == "model timeout after 30s"
    assert client.get_workflow_run(client.get_task_run(failed).run_id).status == "FAILED"

    cancelled = tracker.start_execution("wf-2", "e2", "retry")
    tracker.complete_execution(cancelled, {}, status="cancelled")
    assert tracker.get_execution_history("e2")[-1]["status"] == "cancelled"


def test_execution_failure_shapes(lifecycle: LifecycleManager, tracker: ExecutionTracker) -> None:
    assert tracker.get_execution_history("nobody") == []
    tracker.complete_execution("task-does-not-exist", {"x": 1})  # ignored, as in the lesson
    with pytest.raises(NotFound):
        tracker.start_execution("wf", "nobody", "t")
    with pytest.raises(NotFound):
        tracker.log_event("task-does-not-exist", "step_started", {})

    lifecycle.create_agent("e3", "worker", {})
    execution = tracker.start_execution("wf-3", "e3", "t")
    with pytest.raises(InvalidArgument):
        tracker.log_event(execution, "task.completed", {})  # a system event type
    with pytest.raises(ValueError):
        tracker.complete_execution(execution, {}, status="done")
    tracker.complete_execution(execution, {"ok": True})
    with pytest.raises(FailedPrecondition):
        tracker.complete_execution(execution, {"ok": True})  # already finished

    lifecycle.terminate_agent("e3")
    with pytest.raises(FailedPrecondition):
        tracker.start_execution("wf-3", "e3", "t")


# -- RecoveryManager -----------------------------------------------------------------


def test_recover_agent_shapes(
    lifecycle: LifecycleManager,
    states: StateManager,
    tracker: ExecutionTracker,
    recovery: RecoveryManager,
) -> None:
    assert recovery.recover_agent("nobody") == {"status": "no_state", "recovered": False}
    lifecycle.create_agent("r1", "worker", {})
    assert recovery.recover_agent("r1") == {"status": "no_state", "recovered": False}

    states.save_agent_state("r1", {"step": 2})
    ok = tracker.start_execution("wf", "r1", "t1")
    tracker.complete_execution(ok, {"done": True})
    assert recovery.recover_agent("r1") == {
        "status": "recovered",
        "state": {"step": 2},
        "recovered": True,
    }

    timeout = tracker.start_execution("wf", "r1", "t2")
    tracker.complete_execution(timeout, {"error": "Timeout calling the model"}, "failed")
    assert recovery.recover_agent("r1") == {
        "status": "retry",
        "strategy": "increase_timeout",
        "recovered": True,
    }

    lifecycle.create_agent("r2", "worker", {})
    states.save_agent_state("r2", {"step": 1})
    busy = tracker.start_execution("wf", "r2", "t1")
    tracker.complete_execution(busy, {"error": "resource exhausted: rate limit"}, "failed")
    assert recovery.recover_agent("r2") == {
        "status": "retry",
        "strategy": "wait_and_retry",
        "recovered": True,
    }

    lifecycle.create_agent("r3", "worker", {})
    states.save_agent_state("r3", {"step": 1})
    bad = tracker.start_execution("wf", "r3", "t1")
    tracker.complete_execution(bad, {"error": "KeyError: 'customer'"}, "failed")
    assert recovery.recover_agent("r3") == {
        "status": "manual_intervention",
        "recovered": False,
        "error": "KeyError: 'customer'",
    }


def test_recover_agent_in_error_without_task_failure(
    lifecycle: LifecycleManager, states: StateManager, recovery: RecoveryManager, client: Client
) -> None:
    lifecycle.create_agent("r4", "worker", {})
    states.save_agent_state("r4", {"step": 1})
    client.report_error("r4", "disk full", kind=ErrorKind.INTERNAL)
    assert recovery.recover_agent("r4") == {
        "status": "manual_intervention",
        "recovered": False,
        "error": "disk full",
    }


def test_checkpoints_create_and_restore(
    lifecycle: LifecycleManager, states: StateManager, recovery: RecoveryManager
) -> None:
    lifecycle.create_agent("c1", "worker", {})
    states.save_agent_state("c1", {"step": 1})
    checkpoint_id = recovery.create_checkpoint("c1")
    assert isinstance(checkpoint_id, str) and checkpoint_id
    states.save_agent_state("c1", {"step": 2})
    assert states.load_agent_state("c1") == {"step": 2}

    assert recovery.restore_from_checkpoint(checkpoint_id) == {
        "status": "restored",
        "agent_id": "c1",
        "checkpoint_id": checkpoint_id,
    }
    assert states.load_agent_state("c1") == {"step": 1}  # the cache saw the restore

    assert recovery.restore_from_checkpoint("ckpt_missing") == {
        "status": "checkpoint_not_found",
        "restored": False,
    }
    assert recovery.restore_from_checkpoint("checkpoint-c1-1700000000.5") == {
        "status": "checkpoint_not_found",
        "restored": False,
    }
    assert recovery.restore_from_checkpoint("not a valid id") == {
        "status": "checkpoint_not_found",
        "restored": False,
    }


def test_checkpoint_failure_shapes(
    lifecycle: LifecycleManager, recovery: RecoveryManager, states: StateManager
) -> None:
    with pytest.raises(NotFound):
        recovery.create_checkpoint("nobody")
    lifecycle.create_agent("c2", "worker", {})
    empty = recovery.create_checkpoint("c2")  # no state yet: nothing to restore later
    assert recovery.restore_from_checkpoint(empty) == {
        "status": "checkpoint_without_state",
        "checkpoint_id": empty,
        "restored": False,
    }
    states.save_agent_state("c2", {"step": 1})
    full = recovery.create_checkpoint("c2")
    lifecycle.terminate_agent("c2")
    with pytest.raises(FailedPrecondition):
        recovery.restore_from_checkpoint(full)  # a terminated agent's state is final
