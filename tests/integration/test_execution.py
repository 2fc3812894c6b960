"""Workflow runs, task runs, leases and interruption, over a real server on both databases."""

from __future__ import annotations

import json
import time
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from stateward.server.config import Settings
from stateward.server.domain.runs import DEFAULT_HEARTBEAT_TIMEOUT_US
from stateward.v1 import (
    common_pb2,
    execution_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    recovery_pb2,
    recovery_pb2_grpc,
)
from stateward.v1 import execution_pb2 as ex
from tests.support.postgres import free_port
from tests.support.server import ServerProcess, ServerThread

RUN = ex.RunStatus
TASK = ex.TaskStatus


NAMESPACE_KEY = "x-stateward-namespace"


class _Details(
    namedtuple("_Details", "method timeout metadata credentials wait_for_ready compression"),
    grpc.ClientCallDetails,
):
    pass


class InNamespace(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Sends every call to one namespace: tests share a server, not data or an event log."""

    def __init__(self, namespace: str) -> None:
        self.pair = (NAMESPACE_KEY, namespace)

    def _with(self, d: Any) -> _Details:
        metadata = (*(d.metadata or ()), self.pair)
        return _Details(
            d.method, d.timeout, metadata, d.credentials, d.wait_for_ready, d.compression
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with(details), request)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """One server per database for this module; each test works in its own namespace."""
    root = tmp_path_factory.mktemp("server")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'stateward.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=str(root / "data"),
        database_url=url,
        grace_period=0.5,
        log_level="WARNING",
        sweep_interval=0.05,
    )
    running = ServerThread(settings).start()
    yield running
    running.close()


class Api:
    """Raw stubs for one server plus a few shortcuts."""

    def __init__(self, target: str, namespace: str = "") -> None:
        self.raw = grpc.insecure_channel(target)
        self.channel = (
            grpc.intercept_channel(self.raw, InNamespace(namespace)) if namespace else self.raw
        )
        self.ex = execution_pb2_grpc.ExecutionServiceStub(self.channel)
        self.lc = lifecycle_pb2_grpc.LifecycleServiceStub(self.channel)

    def agent(self, agent_id: str | None = None) -> str:
        agent_id = agent_id or f"agent-{uuid.uuid4().hex[:8]}"
        self.lc.CreateAgent(lifecycle_pb2.CreateAgentRequest(agent_id=agent_id, type="worker"))
        return agent_id

    def run(self, agent_id: str = "", **fields: Any) -> ex.WorkflowRun:
        fields.setdefault("workflow_name", "wf")
        return self.ex.StartWorkflowRun(ex.StartWorkflowRunRequest(agent_id=agent_id, **fields)).run

    def task(self, run_id: str, agent_id: str, task_id: str = "t", **fields: Any) -> ex.TaskRun:
        request = ex.StartTaskRunRequest(
            run_id=run_id, task_id=task_id, agent_id=agent_id, **fields
        )
        return self.ex.StartTaskRun(request).task_run

    def get_task(self, task_run_id: str) -> ex.TaskRun:
        return self.ex.GetTaskRun(ex.GetTaskRunRequest(task_run_id=task_run_id)).task_run

    def get_run(self, run_id: str) -> ex.WorkflowRun:
        return self.ex.GetWorkflowRun(ex.GetWorkflowRunRequest(run_id=run_id)).run

    def events(self, **filter_fields: Any) -> list[ex.Event]:
        found: list[ex.Event] = []
        token = ""
        while True:
            reply = self.ex.ListEvents(
                ex.ListEventsRequest(
                    filter=ex.EventFilter(**filter_fields), page_size=1000, page_token=token
                )
            )
            found.extend(reply.events)
            token = reply.next_page_token
            if not token:
                return found

    def close(self) -> None:
        self.raw.close()


@pytest.fixture
def api(shared_server: ServerThread) -> Iterator[Api]:
    client = Api(shared_server.target, namespace=f"t{uuid.uuid4().hex[:12]}")
    yield client
    client.close()


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e9))
    return d


def failure(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo detail")


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    raise AssertionError("no BadRequest detail")


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def micros(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


# -- workflow runs ----------------------------------------------------------
def test_start_workflow_run_is_running_at_once_and_emits_run_started(api: Api) -> None:
    agent = api.agent()
    run = api.run(agent, input_json=b'{"n": 12345678901234567890}', labels={"team": "a"})
    assert run.status == RUN.RUN_STATUS_RUNNING
    assert run.run_id.startswith("run-") and run.root_run_id == run.run_id and run.attempt == 1
    assert run.start_time == run.create_time and not run.HasField("end_time")
    assert run.input_json == b'{"n": 12345678901234567890}'  # exact, beyond 2^53
    assert dict(run.labels) == {"team": "a"}
    assert api.get_run(run.run_id) == run
    [started] = api.events(run_id=run.run_id)
    assert started.type == "run.started" and started.agent_id == agent
    assert json.loads(started.data_json) == {"workflow_name": "wf", "attempt": 1}


def test_start_workflow_run_without_agent_and_with_empty_input(api: Api) -> None:
    run = api.run()
    assert run.agent_id == "" and run.input_json == b"null"


def test_start_workflow_run_refuses_bad_input(api: Api) -> None:
    error = failure(lambda: api.run(workflow_name="", input_json=b"{nope"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(error)) == {"workflow_name", "input_json"}
    error = failure(lambda: api.run("no-such-agent"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no-such-agent" in (error.details() or "")
    error = failure(lambda: api.run("bad/id"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_terminated_agents_cannot_start_runs_or_tasks(api: Api) -> None:
    agent, other = api.agent(), api.agent()
    run = api.run(other)
    api.lc.TerminateAgent(lifecycle_pb2.TerminateAgentRequest(agent_id=agent))
    error = failure(lambda: api.run(agent))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "AGENT_TERMINATED"
    error = failure(lambda: api.task(run.run_id, agent))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "AGENT_TERMINATED"


def test_start_workflow_run_is_idempotent_by_request_id(api: Api) -> None:
    first = api.run(request_id="start-1", workflow_name="wf-a")
    again = api.run(request_id="start-1", workflow_name="wf-a")
    assert again == first
    assert len(api.events(run_id=first.run_id)) == 1
    error = failure(lambda: api.run(request_id="start-1", workflow_name="wf-b"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_run_status_machine_is_enforced(api: Api) -> None:
    run = api.run()
    done = api.ex.CompleteWorkflowRun(
        ex.CompleteWorkflowRunRequest(run_id=run.run_id, result_json=b"[1]")
    ).run
    assert done.status == RUN.RUN_STATUS_COMPLETED and done.result_json == b"[1]"
    assert done.HasField("end_time")
    for call in (
        lambda: api.ex.CompleteWorkflowRun(ex.CompleteWorkflowRunRequest(run_id=run.run_id)),
        lambda: api.ex.FailWorkflowRun(
            ex.FailWorkflowRunRequest(run_id=run.run_id, error=common_pb2.ErrorDetail(message="x"))
        ),
        lambda: api.ex.CancelWorkflowRun(ex.CancelWorkflowRunRequest(run_id=run.run_id)),
    ):
        error = failure(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(error)
        assert info.reason == "INVALID_RUN_STATUS"
        assert info.metadata["current_status"] == "COMPLETED"
    assert [e.type for e in api.events(run_id=run.run_id)] == ["run.started", "run.completed"]
    error = failure(
        lambda: api.ex.CompleteWorkflowRun(ex.CompleteWorkflowRunRequest(run_id="run-missing"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_fail_workflow_run_records_error_and_kind(api: Api) -> None:
    run = api.run()
    error = common_pb2.ErrorDetail(
        message="model quota",
        kind=common_pb2.ERROR_KIND_RESOURCE_EXHAUSTED,
        retryable=True,
        details_json=b'{"limit": 10}',
    )
    failed = api.ex.FailWorkflowRun(ex.FailWorkflowRunRequest(run_id=run.run_id, error=error)).run
    assert failed.status == RUN.RUN_STATUS_FAILED
    assert failed.error.message == "model quota"
    assert failed.error.kind == common_pb2.ERROR_KIND_RESOURCE_EXHAUSTED and failed.error.retryable
    assert failed.error.HasField("time")
    event = api.events(run_id=run.run_id)[-1]
    assert event.type == "run.failed" and json.loads(event.data_json)["error_kind"] == 2
    bad = failure(
        lambda: api.ex.FailWorkflowRun(
            ex.FailWorkflowRunRequest(
                run_id=api.run().run_id, error=common_pb2.ErrorDetail(kind=99)
            )
        )
    )
    assert set(violations(bad)) == {"error.message", "error.kind"}


def test_list_workflow_runs_filters_and_pages_newest_first(api: Api) -> None:
    agent = api.agent()
    runs = [
        api.run(
            agent if i % 2 else "", workflow_name=f"wf-{i % 3}", labels={"i": str(i), "all": "y"}
        )
        for i in range(7)
    ]
    api.ex.CompleteWorkflowRun(ex.CompleteWorkflowRunRequest(run_id=runs[3].run_id))

    def listing(**fields: Any) -> list[str]:
        ids, token = [], ""
        while True:
            reply = api.ex.ListWorkflowRuns(
                ex.ListWorkflowRunsRequest(page_size=2, page_token=token, **fields)
            )
            assert len(reply.runs) <= 2
            ids += [r.run_id for r in reply.runs]
            token = reply.next_page_token
            if not token:
                return ids

    newest_first = [r.run_id for r in reversed(runs)]
    assert listing(labels={"all": "y"}) == newest_first
    assert listing(workflow_name="wf-1") == [runs[i].run_id for i in (4, 1)]
    assert listing(agent_id=agent) == [runs[i].run_id for i in (5, 3, 1)]
    assert listing(status=RUN.RUN_STATUS_COMPLETED) == [runs[3].run_id]
    assert listing(labels={"i": "2"}) == [runs[2].run_id]
    assert listing(root_run_id=runs[6].run_id) == [runs[6].run_id]
    window = {"start_time_from": runs[2].create_time, "start_time_to": runs[5].create_time}
    assert listing(labels={"all": "y"}, **window) == [runs[i].run_id for i in (4, 3, 2)]
    first = api.ex.ListWorkflowRuns(ex.ListWorkflowRunsRequest(page_size=2))
    error = failure(
        lambda: api.ex.ListWorkflowRuns(
            ex.ListWorkflowRunsRequest(
                page_size=2, workflow_name="other", page_token=first.next_page_token
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = failure(lambda: api.ex.ListWorkflowRuns(ex.ListWorkflowRunsRequest(status=42)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- task runs ----------------------------------------------------------
def test_task_run_lifecycle_with_attempts_results_and_compensation(api: Api) -> None:
    agent = api.agent()
    run = api.run(agent)
    first = api.task(run.run_id, agent, "fetch", input_json=b'{"url": "x"}', timeout=seconds(60))
    assert first.status == TASK.TASK_STATUS_RUNNING and first.attempt == 1
    assert first.timeout == seconds(60) and not first.HasField("heartbeat_timeout")
    assert micros(first.lease_expire_time) == micros(first.start_time) + 60_000_000
    failed = api.ex.FailTaskRun(
        ex.FailTaskRunRequest(
            task_run_id=first.task_run_id,
            error=common_pb2.ErrorDetail(
                message="boom", kind=common_pb2.ERROR_KIND_DEPENDENCY, retryable=True
            ),
        )
    ).task_run
    assert failed.status == TASK.TASK_STATUS_FAILED
    assert (failed.error.message, failed.error.kind, failed.error.retryable) == ("boom", 3, True)
    second = api.task(run.run_id, agent, "fetch")
    other = api.task(run.run_id, agent, "parse")
    assert (second.attempt, other.attempt) == (2, 1)
    done = api.ex.CompleteTaskRun(
        ex.CompleteTaskRunRequest(
            task_run_id=second.task_run_id,
            result_json=b'"ok"',
            compensation_json=b'{"undo": "delete"}',
        )
    ).task_run
    assert done.status == TASK.TASK_STATUS_COMPLETED and done.result_json == b'"ok"'
    assert done.compensation_json == b'{"undo": "delete"}' and done.HasField("end_time")
    assert not done.HasField("lease_expire_time")
    for call in (
        lambda: api.ex.CompleteTaskRun(ex.CompleteTaskRunRequest(task_run_id=second.task_run_id)),
        lambda: api.ex.Heartbeat(ex.HeartbeatRequest(task_run_id=second.task_run_id)),
        lambda: api.ex.FailTaskRun(
            ex.FailTaskRunRequest(
                task_run_id=second.task_run_id, error=common_pb2.ErrorDetail(message="late")
            )
        ),
    ):
        error = failure(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(error).reason == "INVALID_TASK_STATUS"
        assert error_info(error).metadata["current_status"] == "COMPLETED"
    types = [(e.type, e.task_run_id) for e in api.events(run_id=run.run_id)]
    assert types == [
        ("run.started", ""),
        ("task.started", first.task_run_id),
        ("task.failed", first.task_run_id),
        ("task.started", second.task_run_id),
        ("task.started", other.task_run_id),
        ("task.completed", second.task_run_id),
    ]


def test_task_runs_need_a_running_run_and_a_known_agent(api: Api) -> None:
    agent = api.agent()
    run = api.run(agent)
    error = failure(lambda: api.task(run.run_id, "ghost"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = failure(lambda: api.task("run-missing", agent))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = failure(
        lambda: api.task(run.run_id, agent, "", timeout=seconds(0), heartbeat_timeout=seconds(-1))
    )
    assert set(violations(error)) == {"task_id", "timeout", "heartbeat_timeout"}
    api.ex.CompleteWorkflowRun(ex.CompleteWorkflowRunRequest(run_id=run.run_id))
    error = failure(lambda: api.task(run.run_id, agent))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(error)
    assert info.reason == "INVALID_RUN_STATUS" and info.metadata["current_status"] == "COMPLETED"


def test_start_task_run_is_idempotent_and_does_not_burn_attempts(api: Api) -> None:
    agent = api.agent()
    run = api.run(agent)
    first = api.task(run.run_id, agent, "a", request_id="task-start-1")
    again = api.task(run.run_id, agent, "a", request_id="task-start-1")
    assert again == first
    assert api.task(run.run_id, agent, "a").attempt == 2


def test_a_task_without_timeouts_gets_the_default_heartbeat_lease(api: Api) -> None:
    agent = api.agent()
    task = api.task(api.run(agent).run_id, agent)
    assert task.heartbeat_timeout == seconds(DEFAULT_HEARTBEAT_TIMEOUT_US / 1e6)
    assert micros(task.lease_expire_time) == micros(task.start_time) + DEFAULT_HEARTBEAT_TIMEOUT_US


def test_heartbeat_extends_the_lease_and_stores_progress(api: Api) -> None:
    agent = api.agent()
    task = api.task(
        api.run(agent).run_id, agent, heartbeat_timeout=seconds(30), timeout=seconds(3600)
    )
    beat = api.ex.Heartbeat(
        ex.HeartbeatRequest(task_run_id=task.task_run_id, progress_json=b'{"done": 3}')
    )
    assert not beat.cancel_requested
    assert micros(beat.lease_expire_time) > micros(task.lease_expire_time)
    stored = api.get_task(task.task_run_id)
    assert stored.progress_json == b'{"done": 3}'
    assert micros(stored.lease_expire_time) == micros(stored.last_heartbeat_time) + 30_000_000
    api.ex.Heartbeat(ex.HeartbeatRequest(task_run_id=task.task_run_id))  # no progress: kept
    assert api.get_task(task.task_run_id).progress_json == b'{"done": 3}'
    error = failure(lambda: api.ex.Heartbeat(ex.HeartbeatRequest(task_run_id="task-missing")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = failure(
        lambda: api.ex.Heartbeat(
            ex.HeartbeatRequest(task_run_id=task.task_run_id, progress_json=b"{")
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cancel_requests_cancellation_of_running_tasks(api: Api) -> None:
    agent = api.agent()
    run = api.run(agent)
    stops = api.task(run.run_id, agent, "a", heartbeat_timeout=seconds(30))
    finishes = api.task(run.run_id, agent, "b", heartbeat_timeout=seconds(30))
    ended = api.task(run.run_id, agent, "c")
    api.ex.CompleteTaskRun(ex.CompleteTaskRunRequest(task_run_id=ended.task_run_id))
    cancelled = api.ex.CancelWorkflowRun(
        ex.CancelWorkflowRunRequest(run_id=run.run_id, reason="user")
    ).run
    assert cancelled.status == RUN.RUN_STATUS_CANCELLED and cancelled.cancel_requested
    assert api.ex.Heartbeat(ex.HeartbeatRequest(task_run_id=stops.task_run_id)).cancel_requested
    assert api.get_task(stops.task_run_id).cancel_requested
    assert not api.get_task(ended.task_run_id).cancel_requested
    # A worker that stops on request reports a failure: the task ends CANCELLED.
    stopped = api.ex.FailTaskRun(
        ex.FailTaskRunRequest(
            task_run_id=stops.task_run_id,
            error=common_pb2.ErrorDetail(message="cancelled by request"),
        )
    ).task_run
    assert stopped.status == TASK.TASK_STATUS_CANCELLED
    # One that finishes anyway keeps its result.
    done = api.ex.CompleteTaskRun(
        ex.CompleteTaskRunRequest(task_run_id=finishes.task_run_id, result_json=b"1")
    )
    assert done.task_run.status == TASK.TASK_STATUS_COMPLETED
    error = failure(lambda: api.task(run.run_id, agent, "d"))
    assert error_info(error).reason == "INVALID_RUN_STATUS"
    run_events = [e.type for e in api.events(run_id=run.run_id) if e.type.startswith("run.")]
    assert run_events == ["run.started", "run.cancelled"]
    assert "task.cancelled" in [e.type for e in api.events(task_run_id=stops.task_run_id)]


def test_list_task_runs_and_agent_history(api: Api) -> None:
    a, b = api.agent(), api.agent()
    run1, run2 = api.run(a), api.run(b)
    tasks = [
        api.task(run1.run_id, a, "x"),
        api.task(run2.run_id, a, "y"),
        api.task(run1.run_id, b, "z"),
        api.task(run1.run_id, a, "w"),
    ]
    api.ex.CompleteTaskRun(ex.CompleteTaskRunRequest(task_run_id=tasks[0].task_run_id))

    def pages(call: Callable[[str], Any]) -> list[str]:
        ids, token = [], ""
        while True:
            reply = call(token)
            ids += [t.task_run_id for t in reply.task_runs]
            token = reply.next_page_token
            if not token:
                return ids

    def by_run(run_id: str, **extra: Any) -> list[str]:
        return pages(
            lambda token: api.ex.ListTaskRuns(
                ex.ListTaskRunsRequest(run_id=run_id, page_size=1, page_token=token, **extra)
            )
        )

    ids = [t.task_run_id for t in tasks]
    assert by_run(run1.run_id) == [ids[0], ids[2], ids[3]]  # start order
    assert by_run(run1.run_id, agent_id=a) == [ids[0], ids[3]]
    assert by_run(run1.run_id, status=TASK.TASK_STATUS_COMPLETED) == [ids[0]]
    by_agent = pages(
        lambda token: api.ex.ListTaskRuns(
            ex.ListTaskRunsRequest(agent_id=a, page_size=2, page_token=token)
        )
    )
    assert by_agent == [ids[0], ids[1], ids[3]]
    history = pages(
        lambda token: api.ex.GetAgentHistory(
            ex.GetAgentHistoryRequest(agent_id=a, page_size=2, page_token=token)
        )
    )
    assert history == [ids[3], ids[1], ids[0]]  # newest first
    newest = api.ex.GetAgentHistory(ex.GetAgentHistoryRequest(agent_id=a)).task_runs[-1]
    assert newest.status == TASK.TASK_STATUS_COMPLETED and newest.HasField("end_time")
    error = failure(lambda: api.ex.ListTaskRuns(ex.ListTaskRunsRequest()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = failure(lambda: api.ex.GetAgentHistory(ex.GetAgentHistoryRequest(agent_id="ghost")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_agent_history_lists_work_once_after_a_retry(api: Api) -> None:
    agent = api.agent()
    run = api.run(agent)
    done = api.task(run.run_id, agent, "fetch")
    api.ex.CompleteTaskRun(ex.CompleteTaskRunRequest(task_run_id=done.task_run_id))
    failed = api.task(run.run_id, agent, "parse")
    fail = ex.FailTaskRunRequest(task_run_id=failed.task_run_id, error=common_pb2.ErrorDetail())
    fail.error.message = "bad row"
    api.ex.FailTaskRun(fail)
    fail_run = ex.FailWorkflowRunRequest(run_id=run.run_id, error=fail.error)
    api.ex.FailWorkflowRun(fail_run)
    recovery = recovery_pb2_grpc.RecoveryServiceStub(api.channel)
    retry = recovery.RetryWorkflowRun(recovery_pb2.RetryWorkflowRunRequest(run_id=run.run_id))
    again = api.task(retry.run.run_id, agent, "parse")
    # The retry's run lists the carried-over copy of "fetch" with its own work.
    listed = api.ex.ListTaskRuns(ex.ListTaskRunsRequest(run_id=retry.run.run_id)).task_runs
    assert [(t.task_id, t.carried_from_task_run_id) for t in listed] == [
        ("fetch", done.task_run_id),
        ("parse", ""),
    ]
    # The agent's history is what it executed: "fetch" once, not again as the copy.
    history = api.ex.GetAgentHistory(ex.GetAgentHistoryRequest(agent_id=agent)).task_runs
    assert [t.task_run_id for t in history] == [
        again.task_run_id,
        failed.task_run_id,
        done.task_run_id,
    ]


# -- leases ----------------------------------------------------------
def test_sweeper_times_out_a_task_that_stops_heartbeating(api: Api) -> None:
    agent = api.agent()
    run = api.run(agent)
    task = api.task(run.run_id, agent, heartbeat_timeout=seconds(0.3), timeout=seconds(600))
    alive = api.task(run.run_id, agent, "alive", heartbeat_timeout=seconds(30))
    swept = wait_for(
        lambda: (t := api.get_task(task.task_run_id)).status == TASK.TASK_STATUS_TIMED_OUT and t,
        what="TIMED_OUT",
    )
    assert swept.error.kind == common_pb2.ERROR_KIND_TIMEOUT and swept.error.retryable
    assert "heartbeat timeout of 0.3 s" in swept.error.message
    assert api.get_task(alive.task_run_id).status == TASK.TASK_STATUS_RUNNING
    assert api.get_run(run.run_id).status == RUN.RUN_STATUS_RUNNING  # the driver decides
    time.sleep(0.3)  # a few more sweeps: still one event
    assert [e.type for e in api.events(task_run_id=task.task_run_id)] == [
        "task.started",
        "task.timed_out",
    ]
    error = failure(lambda: api.ex.Heartbeat(ex.HeartbeatRequest(task_run_id=task.task_run_id)))
    assert error_info(error).metadata["current_status"] == "TIMED_OUT"


def test_sweeper_enforces_the_overall_timeout_despite_heartbeats(api: Api) -> None:
    agent = api.agent()
    task = api.task(
        api.run(agent).run_id, agent, timeout=seconds(0.5), heartbeat_timeout=seconds(10)
    )

    def beat_until_refused() -> bool:
        try:
            api.ex.Heartbeat(ex.HeartbeatRequest(task_run_id=task.task_run_id))
            return False
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            return True

    wait_for(beat_until_refused, what="the overall timeout")
    swept = api.get_task(task.task_run_id)
    assert swept.status == TASK.TASK_STATUS_TIMED_OUT
    assert "timeout of 0.5 s" in swept.error.message and "heartbeat" not in swept.error.message


def test_cancelled_task_whose_worker_goes_silent_ends_cancelled(api: Api) -> None:
    agent = api.agent()
    run = api.run(agent)
    task = api.task(run.run_id, agent, heartbeat_timeout=seconds(1.5))
    api.ex.CancelWorkflowRun(ex.CancelWorkflowRunRequest(run_id=run.run_id))
    wait_for(
        lambda: api.get_task(task.task_run_id).status == TASK.TASK_STATUS_CANCELLED,
        what="CANCELLED",
    )
    assert "worker stopped without reporting" in api.get_task(task.task_run_id).error.message


def test_a_late_result_never_revives_an_expired_task(settings: Settings) -> None:
    # No sweeper in sight (a long interval): the late call itself times the task out.
    running = ServerThread(replace(settings, sweep_interval=600)).start()
    api = Api(running.target)
    try:
        agent = api.agent()
        task = api.task(api.run(agent).run_id, agent, heartbeat_timeout=seconds(0.2))
        time.sleep(0.4)
        assert api.get_task(task.task_run_id).status == TASK.TASK_STATUS_RUNNING  # not swept yet
        error = failure(
            lambda: api.ex.CompleteTaskRun(
                ex.CompleteTaskRunRequest(task_run_id=task.task_run_id, request_id="late-1")
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(error).metadata["current_status"] == "TIMED_OUT"
        assert "TIMED_OUT" in (error.details() or "")
        assert api.get_task(task.task_run_id).status == TASK.TASK_STATUS_TIMED_OUT
        assert [e.type for e in api.events(task_run_id=task.task_run_id)] == [
            "task.started",
            "task.timed_out",
        ]
    finally:
        api.close()
        running.close()


def test_replicas_sweeping_together_mark_each_task_and_run_once(settings: Settings) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite serves one server process; replicas need PostgreSQL")
    first = ServerThread(settings).start()
    second = ServerThread(replace(settings, listen="127.0.0.1:0")).start()
    api = Api(first.target)
    try:
        agent = api.agent()
        run = api.run(agent)
        tasks = [
            api.task(run.run_id, agent, f"t{i}", heartbeat_timeout=seconds(0.2)) for i in range(20)
        ]
        ids = {t.task_run_id for t in tasks}
        leased = {api.run(heartbeat_timeout=seconds(0.2)).run_id for _ in range(20)}
        wait_for(
            lambda: all(api.get_task(i).status == TASK.TASK_STATUS_TIMED_OUT for i in ids),
            what="every task TIMED_OUT",
        )
        wait_for(
            lambda: all(api.get_run(r).status == RUN.RUN_STATUS_INTERRUPTED for r in leased),
            what="every leased run INTERRUPTED",
        )
        time.sleep(0.3)
        timed_out = [
            e.task_run_id for e in api.events(run_id=run.run_id) if e.type == "task.timed_out"
        ]
        assert sorted(timed_out) == sorted(ids)
        interrupted = [e.run_id for e in api.events(types=["run.interrupted"])]
        assert sorted(interrupted) == sorted(leased)
    finally:
        api.close()
        second.close()
        first.close()


# -- workflow-run leases ----------------------------------------------------------
def test_a_run_without_heartbeat_timeout_has_no_lease_and_may_still_beat(api: Api) -> None:
    run = api.run()
    assert not run.HasField("heartbeat_timeout") and not run.HasField("lease_expire_time")
    reply = api.ex.HeartbeatWorkflowRun(ex.HeartbeatWorkflowRunRequest(run_id=run.run_id))
    assert not reply.HasField("lease_expire_time")
    beaten = api.get_run(run.run_id)
    assert beaten.HasField("last_heartbeat_time") and not beaten.HasField("lease_expire_time")
    assert [e.type for e in api.events(run_id=run.run_id)] == ["run.started"]  # no event


def test_heartbeats_keep_a_leased_run_alive_and_ending_it_clears_the_lease(api: Api) -> None:
    run = api.run(heartbeat_timeout=seconds(0.5))
    assert run.heartbeat_timeout.ToMilliseconds() == 500
    assert micros(run.lease_expire_time) == micros(run.start_time) + 500_000
    request = ex.HeartbeatWorkflowRunRequest(run_id=run.run_id)
    deadline = time.monotonic() + 1.5  # three heartbeat timeouts
    while time.monotonic() < deadline:
        lease = api.ex.HeartbeatWorkflowRun(request).lease_expire_time
        time.sleep(0.1)
    alive = api.get_run(run.run_id)
    assert alive.status == RUN.RUN_STATUS_RUNNING
    assert micros(alive.lease_expire_time) == micros(lease) > micros(run.lease_expire_time)
    assert micros(alive.lease_expire_time) == micros(alive.last_heartbeat_time) + 500_000
    done = api.ex.CompleteWorkflowRun(ex.CompleteWorkflowRunRequest(run_id=run.run_id)).run
    assert done.status == RUN.RUN_STATUS_COMPLETED and not done.HasField("lease_expire_time")
    time.sleep(0.7)  # past the old lease, with sweeps: nothing happens to an ended run
    assert api.get_run(run.run_id).status == RUN.RUN_STATUS_COMPLETED
    error = failure(lambda: api.ex.HeartbeatWorkflowRun(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "INVALID_RUN_STATUS"
    assert error_info(error).metadata["current_status"] == "COMPLETED"


def test_sweeper_interrupts_a_run_whose_driver_stops_heartbeating(api: Api) -> None:
    agent = api.agent()
    run = api.run(agent, heartbeat_timeout=seconds(0.3))
    task = api.task(run.run_id, agent, heartbeat_timeout=seconds(30))
    alive = api.run(agent, heartbeat_timeout=seconds(60))
    swept = wait_for(
        lambda: (r := api.get_run(run.run_id)).status == RUN.RUN_STATUS_INTERRUPTED and r,
        what="INTERRUPTED",
    )
    assert swept.error.kind == common_pb2.ERROR_KIND_TIMEOUT and swept.error.retryable
    assert "heartbeat timeout of 0.3 s" in swept.error.message
    assert swept.HasField("end_time") and not swept.HasField("lease_expire_time")
    assert api.get_run(alive.run_id).status == RUN.RUN_STATUS_RUNNING
    # The run is over: its worker is told to stop on its next heartbeat.
    beat = api.ex.Heartbeat(ex.HeartbeatRequest(task_run_id=task.task_run_id))
    assert beat.cancel_requested
    time.sleep(0.3)  # a few more sweeps: still one event
    events = api.events(run_id=run.run_id)
    assert [e.type for e in events] == ["run.started", "task.started", "run.interrupted"]
    data = json.loads(events[-1].data_json)
    assert data["reason"] == "heartbeat_timeout" and data["cancel_requested_task_runs"] == 1
    error = failure(
        lambda: api.ex.HeartbeatWorkflowRun(ex.HeartbeatWorkflowRunRequest(run_id=run.run_id))
    )
    assert error_info(error).metadata["current_status"] == "INTERRUPTED"
    # The next attempt inherits the heartbeat timeout and gets a lease of its own.
    recovery = recovery_pb2_grpc.RecoveryServiceStub(api.channel)
    retry = recovery.RetryWorkflowRun(recovery_pb2.RetryWorkflowRunRequest(run_id=run.run_id)).run
    assert retry.status == RUN.RUN_STATUS_RUNNING and retry.attempt == 2
    assert retry.heartbeat_timeout.ToMilliseconds() == 300
    assert micros(retry.lease_expire_time) == micros(retry.start_time) + 300_000


def test_a_late_call_never_revives_an_expired_run(settings: Settings) -> None:
    # No sweeper in sight (a long interval): the late call itself interrupts the run.
    running = ServerThread(replace(settings, sweep_interval=600)).start()
    api = Api(running.target)
    try:
        agent = api.agent()
        late = {
            "complete": lambda r: api.ex.CompleteWorkflowRun(
                ex.CompleteWorkflowRunRequest(run_id=r, request_id=f"late-{r}")
            ),
            "cancel": lambda r: api.ex.CancelWorkflowRun(ex.CancelWorkflowRunRequest(run_id=r)),
            "heartbeat": lambda r: api.ex.HeartbeatWorkflowRun(
                ex.HeartbeatWorkflowRunRequest(run_id=r)
            ),
            "start a task": lambda r: api.task(r, agent),
        }
        runs = {what: api.run(agent, heartbeat_timeout=seconds(0.2)) for what in late}
        retried = api.run(agent, heartbeat_timeout=seconds(0.2))
        worked = api.run(agent, heartbeat_timeout=seconds(0.2))
        worker = api.task(worked.run_id, agent, heartbeat_timeout=seconds(60))
        time.sleep(0.4)
        assert api.get_run(retried.run_id).status == RUN.RUN_STATUS_RUNNING  # not swept yet
        for what, call in late.items():
            run_id = runs[what].run_id
            error = failure(lambda: call(run_id))  # noqa: B023
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, what
            assert error_info(error).metadata["current_status"] == "INTERRUPTED", what
            assert "heartbeat timeout of 0.2 s" in (error.details() or ""), what
            assert api.get_run(run_id).status == RUN.RUN_STATUS_INTERRUPTED, what
            types = [e.type for e in api.events(run_id=run_id)]
            assert types == ["run.started", "run.interrupted"], what
        # A worker's heartbeat learns at once that its run is over.
        beat = api.ex.Heartbeat(ex.HeartbeatRequest(task_run_id=worker.task_run_id))
        assert beat.cancel_requested
        assert api.get_run(worked.run_id).status == RUN.RUN_STATUS_INTERRUPTED
        # Retrying an abandoned run needs no sweep first: it is interrupted, then retried.
        recovery = recovery_pb2_grpc.RecoveryServiceStub(api.channel)
        request = recovery_pb2.RetryWorkflowRunRequest(run_id=retried.run_id)
        attempt = recovery.RetryWorkflowRun(request).run
        assert attempt.attempt == 2 and attempt.retry_of_run_id == retried.run_id
        assert api.get_run(retried.run_id).status == RUN.RUN_STATUS_INTERRUPTED
        types = [e.type for e in api.events(run_id=retried.run_id)]
        assert types == ["run.started", "run.interrupted"]
        assert api.events(run_id=attempt.run_id)[0].type == "run.retried"
    finally:
        api.close()
        running.close()


@pytest.mark.parametrize("value", [0.0, -1.0, 367 * 86400.0])
def test_a_bad_run_heartbeat_timeout_is_refused_and_nothing_starts(api: Api, value: float) -> None:
    error = failure(lambda: api.run(heartbeat_timeout=seconds(value)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "heartbeat_timeout" in violations(error)
    listed = api.ex.ListWorkflowRuns(ex.ListWorkflowRunsRequest()).runs
    assert list(listed) == []


def test_heartbeat_of_a_missing_or_malformed_run_says_so(api: Api) -> None:
    request = ex.HeartbeatWorkflowRunRequest(run_id="run-ghost")
    error = failure(lambda: api.ex.HeartbeatWorkflowRun(request))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "run-ghost" in (error.details() or "")
    error = failure(lambda: api.ex.HeartbeatWorkflowRun(ex.HeartbeatWorkflowRunRequest()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "run_id" in violations(error)


def test_restart_after_a_run_lease_expired_marks_the_run_interrupted(
    server: ServerThread,
) -> None:
    api = Api(server.target)
    try:
        lost = api.run(heartbeat_timeout=seconds(1.0))
        kept = api.run(heartbeat_timeout=seconds(120))
        unleased = api.run()
        server.stop()
        grace = 2 * server.settings.sweep_interval + 1.0
        time.sleep(max(0.0, micros(lost.lease_expire_time) / 1e6 + grace + 0.3 - time.time()))
        server.start()
        run = api.get_run(lost.run_id)  # marked before the server answered anything
        assert run.status == RUN.RUN_STATUS_INTERRUPTED
        assert "while no Stateward server was running" in run.error.message
        assert "heartbeat timeout of 1 s" in run.error.message
        assert api.get_run(kept.run_id).status == RUN.RUN_STATUS_RUNNING
        assert api.get_run(unleased.run_id).status == RUN.RUN_STATUS_RUNNING
    finally:
        api.close()


def test_restart_after_the_lease_expired_marks_task_and_run_interrupted(
    server: ServerThread,
) -> None:
    api = Api(server.target)
    try:
        _interrupted_after_restart(server, api)
    finally:
        api.close()


def _interrupted_after_restart(server: ServerThread, api: Api) -> None:
    agent = api.agent()
    run = api.run(agent)
    lost = api.task(run.run_id, agent, "lost", heartbeat_timeout=seconds(1.5))
    kept = api.task(run.run_id, agent, "kept", heartbeat_timeout=seconds(120))
    other_run = api.run(agent)
    server.stop()
    grace = 2 * server.settings.sweep_interval + 1.0
    time.sleep(max(0.0, micros(lost.lease_expire_time) / 1e6 + grace + 0.3 - time.time()))
    server.start()
    task = api.get_task(lost.task_run_id)
    assert task.status == TASK.TASK_STATUS_INTERRUPTED
    assert (
        task.error.kind == common_pb2.ERROR_KIND_TIMEOUT
        and "no Stateward server" in task.error.message
    )
    interrupted = api.get_run(run.run_id)
    assert (
        interrupted.status == RUN.RUN_STATUS_INTERRUPTED
        and lost.task_run_id in interrupted.error.message
    )
    # The live sibling is told to stop: its run is over, and a retry will run its task.
    assert api.get_task(kept.task_run_id).status == TASK.TASK_STATUS_RUNNING
    beat = api.ex.Heartbeat(ex.HeartbeatRequest(task_run_id=kept.task_run_id))
    assert beat.cancel_requested
    assert api.get_run(other_run.run_id).status == RUN.RUN_STATUS_RUNNING
    events = api.events(run_id=run.run_id)
    assert [e.type for e in events][-2:] == ["task.interrupted", "run.interrupted"]
    assert json.loads(events[-1].data_json)["cancel_requested_task_runs"] == 1
    # The work was cut off, not slow: the plan is a plain retry, not a longer timeout.
    recovery = recovery_pb2_grpc.RecoveryServiceStub(api.channel)
    plan = recovery.RecoverAgent(recovery_pb2.RecoverAgentRequest(agent_id=agent)).plan
    assert plan.strategy == recovery_pb2.RECOVERY_STRATEGY_RETRY_WITH_BACKOFF
    assert plan.last_failure.task_run_id == lost.task_run_id
    assert "no Stateward server was running" in plan.explanation


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_lease_that_ran_out_during_a_short_outage_is_interrupted(
    settings: Settings,
) -> None:
    # One server owns a SQLite database: a lease that ran out unswept did so while no
    # server ran, however recently; it is not the worker's timeout.
    server = ServerThread(replace(settings, sweep_interval=5.0)).start()  # grace: 11 s
    api = Api(server.target)
    try:
        agent = api.agent()
        run = api.run(agent)
        task = api.task(run.run_id, agent, heartbeat_timeout=seconds(1.0))
        server.stop()
        time.sleep(max(0.0, micros(task.lease_expire_time) / 1e6 + 0.3 - time.time()))
        server.start()
        after = api.get_task(task.task_run_id)
        assert after.status == TASK.TASK_STATUS_INTERRUPTED, after.error.message
        assert "no Stateward server was running" in after.error.message
        assert api.get_run(run.run_id).status == RUN.RUN_STATUS_INTERRUPTED
    finally:
        api.close()
        server.close()


def test_sigkill_while_tasks_run_leaves_them_interrupted_after_restart(tmp_path: Path) -> None:
    port = free_port()
    args = ["--data-dir", str(tmp_path / "data"), "--sweep-interval", "0.05"]
    process = ServerProcess(port, args).start()
    api = Api(process.target)
    try:
        agent = api.agent()
        run = api.run(agent)
        tasks = [
            api.task(run.run_id, agent, f"t{i}", heartbeat_timeout=seconds(2)) for i in range(3)
        ]
        process.kill()
        latest = max(micros(t.lease_expire_time) for t in tasks) / 1e6
        time.sleep(max(0.0, latest + 2 * 0.05 + 1.0 + 0.3 - time.time()))
        process.start()
        for task in tasks:
            after = api.get_task(task.task_run_id)
            assert after.status == TASK.TASK_STATUS_INTERRUPTED, after
        assert api.get_run(run.run_id).status == RUN.RUN_STATUS_INTERRUPTED
        types = [e.type for e in api.events(run_id=run.run_id)]
        assert types.count("task.interrupted") == 3 and types.count("run.interrupted") == 1
    finally:
        api.close()
        process.kill()
