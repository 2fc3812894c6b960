"""Workflow-run leases and ``track_run`` through the client library, sync and async,
against the real server; the trackers' heartbeat schedules with a fake clock."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from stateward.client import (
    CancelRequested,
    Client,
    ErrorKind,
    FailedPrecondition,
    RunStatus,
    RunTrackOptions,
    TaskRun,
    TrackOptions,
    UsageError,
    WorkflowRun,
)
from stateward.client._operation import Call, Sleep
from stateward.client._run_tracking import _RunFlows
from stateward.client._tracking import _Tracker
from stateward.client.errors import Unavailable
from stateward.v1 import execution_pb2
from tests.client.conftest import async_twin, wait_until


def test_a_leased_run_is_kept_alive_by_heartbeats(live: Client) -> None:
    run = live.start_workflow_run("ingest", heartbeat_timeout=timedelta(seconds=30))
    assert run.heartbeat_timeout == timedelta(seconds=30)
    assert run.lease_expire_time is not None and run.start_time is not None
    assert run.lease_expire_time - run.start_time == timedelta(seconds=30)
    renewed = live.heartbeat_workflow_run(run.run_id)
    assert renewed is not None and renewed >= run.lease_expire_time
    read = live.get_workflow_run(run.run_id)
    assert read.lease_expire_time == renewed and read.last_heartbeat_time is not None


def test_a_run_without_a_lease_heartbeats_to_no_expiry(live: Client) -> None:
    run = live.start_workflow_run("ingest")
    assert run.heartbeat_timeout is None and run.lease_expire_time is None
    assert live.heartbeat_workflow_run(run.run_id) is None


def test_an_abandoned_run_is_interrupted_and_its_heartbeat_refused(live: Client) -> None:
    run = live.start_workflow_run("ingest", heartbeat_timeout=0.2)  # seconds
    wait_until(
        lambda: live.get_workflow_run(run.run_id).status == RunStatus.INTERRUPTED,
        what="INTERRUPTED",
    )
    with pytest.raises(FailedPrecondition) as caught:
        live.heartbeat_workflow_run(run.run_id)
    assert caught.value.metadata["current_status"] == "INTERRUPTED"


def test_the_async_client_starts_and_beats_leased_runs(live: Client) -> None:
    async def go() -> None:
        async with async_twin(live) as client:
            run = await client.start_workflow_run("ingest", heartbeat_timeout=5.0)
            assert run.heartbeat_timeout == timedelta(seconds=5)
            lease = await client.heartbeat_workflow_run(run.run_id)
            assert lease is not None and run.lease_expire_time is not None
            assert lease >= run.lease_expire_time

    asyncio.run(go())


# -- track_run ---------------------------------------------------------------------------
def test_track_run_completes_with_the_result_and_keeps_the_lease_alive(live: Client) -> None:
    with live.track_run("ingest", heartbeat_timeout=0.6, input={"n": 1}) as run:
        started = run.run
        assert started is not None and started.heartbeat_timeout == timedelta(seconds=0.6)
        for _ in range(6):  # 1.8 s: three heartbeat timeouts
            time.sleep(0.3)
            assert live.get_workflow_run(run.run_id).status == RunStatus.RUNNING
        run.result = {"pages": 3}
    done = live.get_workflow_run(run.run_id)
    assert done.status == RunStatus.COMPLETED and done.result == {"pages": 3}
    assert done.input == {"n": 1} and done.last_heartbeat_time is not None
    assert run.heartbeat_error is None and not run.cancel_requested


def test_track_run_fails_the_run_with_the_escaping_exception(live: Client) -> None:
    with pytest.raises(TimeoutError):
        with live.track_run("ingest") as run:
            raise TimeoutError("the model did not answer")
    failed = live.get_workflow_run(run.run_id)
    assert failed.status == RunStatus.FAILED and failed.error is not None
    assert failed.error.kind == ErrorKind.TIMEOUT and failed.error.retryable
    assert failed.error.message == "TimeoutError: the model did not answer"


def test_a_cancelled_tracked_run_tells_the_block_to_stop(live: Client) -> None:
    with pytest.raises(CancelRequested):
        with live.track_run("ingest", heartbeat_timeout=0.3) as run:
            live.cancel_workflow_run(run.run_id, "operator stop")
            wait_until(lambda: run.cancel_requested, what="cancel_requested")
            assert isinstance(run.heartbeat_error, FailedPrecondition)
            run.raise_if_cancelled()
    assert live.get_workflow_run(run.run_id).status == RunStatus.CANCELLED


def test_track_run_refuses_bad_options_before_calling(live: Client) -> None:
    with pytest.raises(UsageError, match="heartbeat_timeout"):
        live.track_run("ingest", heartbeat_timeout=0)
    with pytest.raises(UsageError, match="heartbeat_interval"):
        live.track_run("ingest", heartbeat_timeout=1, heartbeat_interval=2)
    assert list(live.iter_workflow_runs()) == []


def test_track_run_takes_over_the_attempt_a_retry_started(live: Client) -> None:
    with pytest.raises(ConnectionError):
        with live.track_run("ingest", heartbeat_timeout=0.6) as first:
            raise ConnectionError("the provider hung up")
    attempt = live.retry_workflow_run(first.run_id).run
    assert attempt.heartbeat_timeout == timedelta(seconds=0.6)  # inherited: a lease runs
    with live.track_run("ingest", run_id=attempt.run_id, heartbeat_timeout=60) as run:
        assert run.run_id == attempt.run_id
        time.sleep(1.5)  # more than two of the attempt's own 0.6 s leases
        assert live.get_workflow_run(attempt.run_id).status == RunStatus.RUNNING
        run.result = {"second": "time lucky"}
    done = live.get_workflow_run(attempt.run_id)
    assert done.status == RunStatus.COMPLETED and done.result == {"second": "time lucky"}


def test_track_run_takes_over_only_a_running_run_of_its_workflow(live: Client) -> None:
    other = live.start_workflow_run("nightly")
    with pytest.raises(UsageError, match="a run of 'nightly', not 'ingest'"):
        with live.track_run("ingest", run_id=other.run_id):
            pass
    live.complete_workflow_run(other.run_id)
    with pytest.raises(UsageError, match="is COMPLETED"):
        with live.track_run("nightly", run_id=other.run_id):
            pass
    with pytest.raises(UsageError, match="an adopted run"):
        live.track_run("nightly", run_id=other.run_id, agent_id="a1")


def test_the_async_track_run_heartbeats_from_a_task(live: Client) -> None:
    async def go() -> str:
        async with async_twin(live) as client:
            async with client.track_run("ingest", heartbeat_timeout=0.6) as run:
                await asyncio.sleep(1.5)
                run.complete({"ok": True})
            return run.run_id

    run_id = asyncio.run(go())
    done = live.get_workflow_run(run_id)
    assert done.status == RunStatus.COMPLETED and done.result == {"ok": True}


# -- the heartbeat schedule, driven with a fake clock --------------------------------------
def _flows(**options: Any) -> tuple[_RunFlows, list[float]]:
    now = [0.0]
    flows = _RunFlows(object(), "ingest", RunTrackOptions(**options), clock=lambda: now[0])  # type: ignore[arg-type]
    flows.run = WorkflowRun.from_proto(
        execution_pb2.WorkflowRun(run_id="run-1", status=execution_pb2.RUN_STATUS_RUNNING)
    )
    flows._next_beat = flows._interval
    return flows, now


def test_a_heartbeat_lost_in_transit_is_retried_well_within_the_lease() -> None:
    flows, now = _flows(heartbeat_timeout=1.2)  # a beat every 0.4 s
    loop = flows._background()
    assert next(loop) == Sleep(pytest.approx(0.4))
    now[0] = 0.4
    beat = loop.send(None)
    assert isinstance(beat, Call) and beat.rpc.method == "HeartbeatWorkflowRun"
    # Two beats lost: each next try is a quarter interval later, not a whole one (the
    # third would then land at 1.2 s, when the lease runs out).
    for lost_at in (0.45, 0.56):
        now[0] = lost_at
        assert loop.throw(Unavailable("connection reset")) == Sleep(pytest.approx(0.1))
        now[0] = lost_at + 0.1
        assert isinstance(loop.send(None), Call)
    now[0] = 0.7
    assert loop.send(None) == Sleep(pytest.approx(0.36))  # landed at 0.66: next at 1.06
    assert flows.heartbeat_error is None


def test_a_heartbeat_gives_up_after_one_interval() -> None:
    flows, now = _flows(heartbeat_timeout=1.2)
    loop = flows._background()
    next(loop)
    now[0] = 0.4
    beat = loop.send(None)
    # A stalled call is abandoned in time to try again within the lease, whatever the
    # client's own call timeout.
    assert isinstance(beat, Call) and beat.prepared.timeout == pytest.approx(0.4)


def test_a_refused_heartbeat_stops_the_loop_and_says_why() -> None:
    flows, now = _flows(heartbeat_timeout=1.2)
    loop = flows._background()
    next(loop)
    now[0] = 0.4
    loop.send(None)
    refused = FailedPrecondition(
        "workflow run 'run-1' is CANCELLED", details={"current_status": "CANCELLED"}
    )
    with pytest.raises(StopIteration):
        loop.throw(refused)
    assert flows.cancel_requested and flows.heartbeat_error is refused


def test_a_zero_heartbeat_interval_is_refused(live: Client) -> None:
    for zero in (0, timedelta(0)):
        with pytest.raises(UsageError, match="heartbeat_interval"):
            live.track_run("ingest", heartbeat_timeout=1, heartbeat_interval=zero)


def test_a_tracked_tasks_lost_heartbeat_is_retried_soon_too() -> None:
    now = [0.0]
    options = TrackOptions(heartbeat_timeout=1.2)
    tracker = _Tracker(object(), "run-1", "fetch", "a1", options, clock=lambda: now[0])  # type: ignore[arg-type]
    tracker.task_run = TaskRun.from_proto(
        execution_pb2.TaskRun(task_run_id="task-1", status=execution_pb2.TASK_STATUS_RUNNING)
    )
    tracker._next_beat = 0.4
    loop = tracker._background()
    assert next(loop) == Sleep(pytest.approx(0.4))
    now[0] = 0.4
    beat = loop.send(None)
    assert isinstance(beat, Call) and beat.prepared.timeout == pytest.approx(0.4)
    now[0] = 0.45
    assert loop.throw(Unavailable("connection reset")) == Sleep(pytest.approx(0.1))
