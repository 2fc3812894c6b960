"""``track_task``: a block of code as a task run, sync and async, against the real server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from stateward.client import (
    Client,
    ErrorKind,
    FailedPrecondition,
    TaskStatus,
    UsageError,
)
from stateward.client._tracking import CancelRequested
from tests.client.conftest import async_twin, wait_until


@pytest.fixture
def run_id(live: Client, agent: str) -> str:
    return live.start_workflow_run("ingest", agent_id=agent).run_id


def client_events(live: Client, task_run_id: str) -> list[Any]:
    return list(live.iter_events(task_run_id=task_run_id))


def test_success_completes_with_the_result_after_its_events(
    live: Client, agent: str, run_id: str
) -> None:
    with live.track_task(run_id, "fetch", agent, input={"url": "u"}) as task:
        assert task.task_run is not None and task.task_run.status == TaskStatus.RUNNING
        for page in range(3):
            task.log("page_fetched", {"page": page}, size=10 * page)
        task.complete({"pages": 3}, compensation={"undo": "delete pages"})
    done = live.get_task_run(task.task_run_id)
    assert done.status == TaskStatus.COMPLETED
    assert done.result == {"pages": 3}
    assert done.input == {"url": "u"}
    assert done.compensation == {"undo": "delete pages"}
    events = client_events(live, task.task_run_id)
    assert [e.type for e in events] == ["task.started"] + ["page_fetched"] * 3 + ["task.completed"]
    assert [e.data for e in events[1:4]] == [{"page": p, "size": 10 * p} for p in range(3)]
    assert all(e.client_time is not None and e.run_id == run_id for e in events[1:4])


@pytest.mark.parametrize(
    ("error", "kind", "retryable"),
    [
        (TimeoutError("took too long"), ErrorKind.TIMEOUT, True),
        (MemoryError(), ErrorKind.RESOURCE_EXHAUSTED, True),
        (ValueError("bad row 7"), ErrorKind.INVALID_INPUT, False),
        (KeyError("x"), ErrorKind.UNKNOWN, False),
    ],
)
def test_an_exception_fails_the_task_and_is_re_raised(
    live: Client, agent: str, run_id: str, error: BaseException, kind: ErrorKind, retryable: bool
) -> None:
    with pytest.raises(type(error)) as raised:
        with live.track_task(run_id, "parse", agent) as task:
            task.log("started_parsing")
            raise error
    assert raised.value is error
    failed = live.get_task_run(task.task_run_id)
    assert failed.status == TaskStatus.FAILED
    assert failed.error is not None
    assert failed.error.kind == kind
    assert failed.error.retryable is retryable
    assert failed.error.message.startswith(type(error).__name__)
    assert failed.error.details["exception_type"].endswith(type(error).__qualname__)
    assert "raise error" in failed.error.details["traceback"]
    # The events logged before the failure made it, ahead of task.failed.
    assert [e.type for e in client_events(live, task.task_run_id)][-2:] == [
        "started_parsing",
        "task.failed",
    ]


def test_custom_error_kinds(live: Client, agent: str, run_id: str) -> None:
    with pytest.raises(ConnectionError):
        with live.track_task(
            run_id, "call", agent, error_kinds={ConnectionError: ErrorKind.DEPENDENCY}
        ) as task:
            raise ConnectionRefusedError("db down")
    error = live.get_task_run(task.task_run_id).error
    assert error is not None and error.kind == ErrorKind.DEPENDENCY


def test_events_go_out_in_batches_by_count_and_by_age(
    live: Client, agent: str, run_id: str
) -> None:
    with live.track_task(run_id, "batch", agent, flush_every=3, flush_interval=60) as task:
        task.log("one")
        task.log("two")
        task.log("three")  # the third makes a full batch: sent without waiting for exit
        wait_until(lambda: len(client_events(live, task.task_run_id)) == 4, what="count flush")
        task.log("four")  # a lone event waits (flush_interval is long) until exit
        assert [e.type for e in client_events(live, task.task_run_id)][-1] == "three"
    types = [e.type for e in client_events(live, task.task_run_id)]
    assert types == ["task.started", "one", "two", "three", "four", "task.completed"]

    with live.track_task(run_id, "aged", agent, flush_every=100, flush_interval=0.05) as task:
        task.log("lonely")  # goes out once it has waited flush_interval
        wait_until(lambda: len(client_events(live, task.task_run_id)) == 2, what="age flush")


def test_many_events_are_split_into_calls_of_at_most_1000(
    live: Client, agent: str, run_id: str
) -> None:
    with live.track_task(run_id, "bulk", agent, flush_every=1000, flush_interval=60) as task:
        for n in range(2500):
            task.log("tick", n=n)
    events = client_events(live, task.task_run_id)
    ticks = [e.data["n"] for e in events if e.type == "tick"]
    assert ticks == list(range(2500))
    sequences = [e.sequence for e in events]
    assert sequences == sorted(sequences)


def test_bad_events_are_refused_where_they_are_logged(
    live: Client, agent: str, run_id: str
) -> None:
    with live.track_task(run_id, "strict", agent) as task:
        with pytest.raises(UsageError, match="system prefix"):
            task.log("task.completed")
        with pytest.raises(UsageError, match="letters, digits"):
            task.log("has space")
        with pytest.raises(UsageError, match="must be JSON"):
            task.log("obj", {"when": object()})
        with pytest.raises(UsageError, match="limit"):
            task.log("huge", {"blob": "x" * 70_000})
    assert live.get_task_run(task.task_run_id).status == TaskStatus.COMPLETED
    with pytest.raises(UsageError, match="has ended"):
        task.log("late")


def test_heartbeats_keep_a_short_lease_alive_and_carry_progress(
    live: Client, agent: str, run_id: str
) -> None:
    """The server times a task out 0.3 s after its last heartbeat (sweeps every 0.05 s);
    the block outlives that many times over and still completes."""
    with live.track_task(run_id, "slow", agent, heartbeat_timeout=0.3) as task:
        task.progress = {"done": 1}
        first = wait_until(
            lambda: live.get_task_run(task.task_run_id).last_heartbeat_time, what="a heartbeat"
        )
        wait_until(
            lambda: (live.get_task_run(task.task_run_id).last_heartbeat_time or first) > first,
            what="a second heartbeat",
        )
        time.sleep(0.6)  # two leases' worth: only heartbeats keep the task RUNNING
        assert live.get_task_run(task.task_run_id).progress == {"done": 1}
    assert live.get_task_run(task.task_run_id).status == TaskStatus.COMPLETED
    assert task.heartbeat_error is None


def test_a_lost_lease_is_reported_at_exit(live: Client, agent: str, run_id: str) -> None:
    """Heartbeats too rare for the lease: the server times the task out, and leaving the
    block says so (the block's own exception, if any, keeps priority)."""
    with pytest.raises(FailedPrecondition):
        with live.track_task(
            run_id, "starved", agent, heartbeat_timeout=0.1, heartbeat_interval=60
        ) as task:
            wait_until(
                lambda: live.get_task_run(task.task_run_id).status == TaskStatus.TIMED_OUT,
                what="the sweeper",
            )
    with pytest.raises(ValueError) as raised:
        with live.track_task(
            run_id, "starved2", agent, heartbeat_timeout=0.1, heartbeat_interval=60
        ) as task:
            wait_until(
                lambda: live.get_task_run(task.task_run_id).status == TaskStatus.TIMED_OUT,
                what="the sweeper",
            )
            raise ValueError("mine")
    assert any("could not record" in note for note in raised.value.__notes__)


def test_cancellation_reaches_the_block(live: Client, agent: str, run_id: str) -> None:
    with pytest.raises(CancelRequested):
        with live.track_task(run_id, "long", agent, heartbeat_interval=0.05) as task:
            assert not task.cancel_requested
            live.cancel_workflow_run(run_id, reason="operator said stop")
            wait_until(lambda: task.cancel_requested, what="cancel_requested")
            task.raise_if_cancelled()
    assert live.get_task_run(task.task_run_id).status == TaskStatus.CANCELLED


def test_a_tracker_is_entered_once(live: Client, agent: str, run_id: str) -> None:
    tracker = live.track_task(run_id, "once", agent)
    with pytest.raises(UsageError):
        tracker.task_run_id  # noqa: B018 - not started yet
    with tracker:
        pass
    with pytest.raises(UsageError, match="only once"):
        with tracker:
            pass


def test_async_tracker_success_failure_and_cancel(live: Client, agent: str, run_id: str) -> None:
    async def main() -> None:
        async with async_twin(live) as client:
            async with client.track_task(
                run_id, "a-ok", agent, heartbeat_interval=0.05, flush_interval=0.05
            ) as task:
                task.log("step", n=1)
                await asyncio.sleep(0.2)  # heartbeats and the timed flush run meanwhile
                task.result = "fine"
            ok = await client.get_task_run(task.task_run_id)
            assert (ok.status, ok.result) == (TaskStatus.COMPLETED, "fine")
            assert ok.last_heartbeat_time is not None

            with pytest.raises(TimeoutError):
                async with client.track_task(run_id, "a-slow", agent) as task:
                    async with asyncio.timeout(0.01):
                        await asyncio.sleep(1)
            failed = await client.get_task_run(task.task_run_id)
            assert failed.error is not None and failed.error.kind == ErrorKind.TIMEOUT

            with pytest.raises(CancelRequested):
                async with client.track_task(
                    run_id, "a-long", agent, heartbeat_interval=0.05
                ) as task:
                    await client.cancel_workflow_run(run_id)
                    while not task.cancel_requested:
                        await asyncio.sleep(0.01)
                    task.raise_if_cancelled()
            cancelled = await client.get_task_run(task.task_run_id)
            assert cancelled.status == TaskStatus.CANCELLED

    asyncio.run(asyncio.wait_for(main(), 30))
    events = [e.type for e in live.iter_events(run_id=run_id)]
    assert "step" in events
