"""Transport limits and deadlines: message size, concurrent streams per connection, and
database work that stops at the caller's deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, NamedTuple

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stateward.server import metrics
from stateward.server.config import Settings
from stateward.server.domain import paging
from stateward.server.services import weights
from stateward.storage.database import WriteContext
from stateward.storage.records import AgentRecord
from stateward.storage.runs import RunRecord, TaskRunRecord
from stateward.v1 import (
    common_pb2,
    execution_pb2_grpc,
    lifecycle_pb2_grpc,
    recovery_pb2,
    recovery_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)
from stateward.v1 import execution_pb2 as ex
from stateward.v1 import lifecycle_pb2 as pb
from tests.integration.test_execution import error_info
from tests.support.server import ServerThread

SEPARATE_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture
def limited(settings: Settings) -> Iterator[ServerThread]:
    server = ServerThread(replace(settings, max_message_bytes=64 << 10, max_concurrent_streams=1))
    yield server.start()
    server.close()


def test_oversized_messages_are_resource_exhausted_naming_the_limit(limited: ServerThread) -> None:
    request = pb.CreateAgentRequest(
        agent_id="big", type="t", config_json=b'{"x": "' + b"a" * 70_000 + b'"}'
    )
    with grpc.insecure_channel(limited.target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateAgent(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(64 << 10) in (caught.value.details() or "")
        with pytest.raises(grpc.RpcError) as missing:  # nothing was written
            stub.GetAgent(pb.GetAgentRequest(agent_id="big"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_connection_gets_at_most_max_concurrent_streams(limited: ServerThread) -> None:
    """HTTP/2 makes the client queue a call past the limit (it is not refused), so with
    one stream held open a second call on the same connection cannot start at all."""
    with grpc.insecure_channel(limited.target, options=SEPARATE_CONNECTION) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with grpc.insecure_channel(limited.target, options=SEPARATE_CONNECTION) as other:
            reply = health_pb2_grpc.HealthStub(other).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == reply.status


def in_flight(method: str) -> float:
    labels = {"service": "stateward.v1.LifecycleService", "method": method}
    return metrics.REGISTRY.get_sample_value("stateward_rpc_in_flight", labels) or 0.0


def test_database_work_stops_at_the_callers_deadline(settings: Settings) -> None:
    """A write still queued when the deadline passes is dropped, not applied later."""
    server = ServerThread(replace(settings, metrics_listen="127.0.0.1:0")).start()
    try:
        check_deadline(server)
    finally:
        server.close()


def check_deadline(server: ServerThread) -> None:
    assert server.server is not None and server.server.db is not None
    db = server.server.db
    release = threading.Event()
    writer_busy = threading.Event()

    def hold_the_writer(ctx: WriteContext) -> None:
        writer_busy.set()
        release.wait(30)

    holder = threading.Thread(target=db.write_sync, args=(hold_the_writer,), daemon=True)
    holder.start()
    assert writer_busy.wait(10)
    with grpc.insecure_channel(server.target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        try:
            with pytest.raises(grpc.RpcError) as caught:
                stub.CreateAgent(
                    pb.CreateAgentRequest(agent_id="late", type="t", config_json=b"{}"), timeout=0.3
                )
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # The server gives up at the same deadline; wait until its handler has ended.
            deadline = time.monotonic() + 20
            while in_flight("CreateAgent") > 0:
                assert time.monotonic() < deadline, "the server kept working past the deadline"
                time.sleep(0.02)
        finally:
            release.set()
            holder.join(10)
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetAgent(pb.GetAgentRequest(agent_id="late"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        created = stub.CreateAgent(
            pb.CreateAgentRequest(agent_id="late", type="t", config_json=b"{}"), timeout=10
        )
        assert created.agent.agent_id == "late"


def test_out_of_range_times_are_invalid_argument_not_internal(server: ServerThread) -> None:
    """Timestamps and durations outside google.protobuf's range once overflowed SQL integers."""
    from google.protobuf import duration_pb2, timestamp_pb2

    from stateward.v1 import execution_pb2, execution_pb2_grpc, recovery_pb2, recovery_pb2_grpc

    far = timestamp_pb2.Timestamp(seconds=2**63 - 1)
    before = timestamp_pb2.Timestamp(seconds=-(2**63))
    forever = duration_pb2.Duration(seconds=2**63 - 1)
    with grpc.insecure_channel(server.target) as channel:
        execution = execution_pb2_grpc.ExecutionServiceStub(channel)
        recovery = recovery_pb2_grpc.RecoveryServiceStub(channel)
        calls = {
            "ended_before": lambda: recovery.ArchiveRuns(
                recovery_pb2.ArchiveRunsRequest(ended_before=before, dry_run=True)
            ),
            "max_age": lambda: recovery.PruneCheckpoints(
                recovery_pb2.PruneCheckpointsRequest(max_age=forever, dry_run=True)
            ),
            "grace_period": lambda: recovery.CollectGarbage(
                recovery_pb2.CollectGarbageRequest(grace_period=forever, dry_run=True)
            ),
            "start_time_from": lambda: execution.ListWorkflowRuns(
                execution_pb2.ListWorkflowRunsRequest(start_time_from=far)
            ),
            "start_time": lambda: execution.ListEvents(
                execution_pb2.ListEventsRequest(start_time=far)
            ),
        }
        for field, call in calls.items():
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert field in (refused.value.details() or ""), field


# -- list pages and answers stop short of the message limit -------------------------------------
class Stubs(NamedTuple):
    lifecycle: lifecycle_pb2_grpc.LifecycleServiceStub
    execution: execution_pb2_grpc.ExecutionServiceStub
    recovery: recovery_pb2_grpc.RecoveryServiceStub
    state: state_pb2_grpc.StateServiceStub


@pytest.fixture
def one_mib(settings: Settings) -> Iterator[Stubs]:
    """Stubs of a server whose messages are limited to 1 MiB."""
    server = ServerThread(replace(settings, max_message_bytes=1 << 20)).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            yield Stubs(
                lifecycle_pb2_grpc.LifecycleServiceStub(channel),
                execution_pb2_grpc.ExecutionServiceStub(channel),
                recovery_pb2_grpc.RecoveryServiceStub(channel),
                state_pb2_grpc.StateServiceStub(channel),
            )
    finally:
        server.close()


def page_all(call: Any, request: Any, field: str) -> tuple[list[Any], int]:
    """Every item of a listing, paging with the largest page size; and the number of pages."""
    items: list[Any] = []
    pages = 0
    while True:
        response = call(request, timeout=30)
        items += getattr(response, field)
        pages += 1
        if not response.next_page_token:
            return items, pages
        request.page_token = response.next_page_token


def big_json(n: int, size: int) -> bytes:
    return b'{"n": %d, "pad": "%s"}' % (n, b"x" * size)


def test_list_pages_hold_what_fits_in_one_message_and_page_on(one_mib: Stubs) -> None:
    # A 1 MiB limit: list pages may carry ~960 KiB of records; every record is ~100 KiB+.
    lc, exe, rec, _ = one_mib
    for n in range(12):
        lc.CreateAgent(
            pb.CreateAgentRequest(agent_id=f"a{n}", type="t", config_json=big_json(n, 200_000))
        )
    run = exe.StartWorkflowRun(ex.StartWorkflowRunRequest(workflow_name="w")).run
    for n in range(12):
        exe.StartWorkflowRun(
            ex.StartWorkflowRunRequest(workflow_name="big", input_json=big_json(n, 200_000))
        )
        exe.StartTaskRun(
            ex.StartTaskRunRequest(
                run_id=run.run_id,
                task_id=f"t{n}",
                agent_id="a0",
                input_json=big_json(n, 200_000),
            )
        )
    for n in range(0, 60, 10):  # 60 events of ~60 KB, ten per call
        exe.AppendEvents(
            ex.AppendEventsRequest(
                events=[
                    ex.NewEvent(type="big", data_json=big_json(k, 60_000), run_id=run.run_id)
                    for k in range(n, n + 10)
                ]
            )
        )
    labels = {f"key-{k:02d}-{'k' * 200}": "v" * 250 for k in range(64)}  # ~30 KB
    for _ in range(40):
        rec.CreateCheckpoint(recovery_pb2.CreateCheckpointRequest(agent_id="a1", labels=labels))

    agents, agent_pages = page_all(lc.ListAgents, pb.ListAgentsRequest(page_size=1000), "agents")
    assert [a.agent_id for a in agents] == sorted(f"a{n}" for n in range(12))
    runs, run_pages = page_all(
        exe.ListWorkflowRuns,
        ex.ListWorkflowRunsRequest(workflow_name="big", page_size=1000),
        "runs",
    )
    assert sorted(r.input_json for r in runs) == sorted(big_json(n, 200_000) for n in range(12))
    tasks, task_pages = page_all(
        exe.ListTaskRuns,
        ex.ListTaskRunsRequest(run_id=run.run_id, page_size=1000),
        "task_runs",
    )
    assert [t.task_id for t in tasks] == [f"t{n}" for n in range(12)]
    history, history_pages = page_all(
        exe.GetAgentHistory,
        ex.GetAgentHistoryRequest(agent_id="a0", page_size=1000),
        "task_runs",
    )
    assert [t.task_id for t in history] == [f"t{n}" for n in reversed(range(12))]
    events, event_pages = page_all(
        exe.ListEvents,
        ex.ListEventsRequest(filter=ex.EventFilter(types=["big"]), page_size=1000),
        "events",
    )
    assert [e.data_json for e in events] == [big_json(k, 60_000) for k in range(60)]
    checkpoints, checkpoint_pages = page_all(
        rec.ListCheckpoints,
        recovery_pb2.ListCheckpointsRequest(agent_id="a1", page_size=1000),
        "checkpoints",
    )
    assert len({c.checkpoint_id for c in checkpoints}) == 40
    # Each listing needed several pages, where one would have exceeded the limit.
    assert min(agent_pages, run_pages, task_pages, history_pages) >= 3
    assert event_pages >= 4 and checkpoint_pages >= 2


# -- answers that are not paged keep what fits and say so --------------------------------------
def test_unpaged_answers_keep_what_fits_and_say_they_were_cut(one_mib: Stubs) -> None:
    # A 1 MiB limit against a dozen task runs of ~200 KB each, per list.
    lc, exe, rec, _ = one_mib
    lc.CreateAgent(pb.CreateAgentRequest(agent_id="a", type="t"))
    failing = exe.StartWorkflowRun(ex.StartWorkflowRunRequest(workflow_name="w")).run
    done = exe.StartWorkflowRun(ex.StartWorkflowRunRequest(workflow_name="w")).run
    failed_ids = []
    for n in range(12):
        task = exe.StartTaskRun(
            ex.StartTaskRunRequest(
                run_id=failing.run_id,
                task_id=f"f{n}",
                agent_id="a",
                input_json=big_json(n, 200_000),
            )
        ).task_run
        exe.FailTaskRun(
            ex.FailTaskRunRequest(
                task_run_id=task.task_run_id, error=common_pb2.ErrorDetail(message="no")
            )
        )
        failed_ids.append(task.task_run_id)
        task = exe.StartTaskRun(
            ex.StartTaskRunRequest(run_id=done.run_id, task_id=f"c{n}", agent_id="a")
        ).task_run
        exe.CompleteTaskRun(
            ex.CompleteTaskRunRequest(
                task_run_id=task.task_run_id,
                result_json=big_json(n, 100_000),
                compensation_json=big_json(n, 100_000),
            )
        )
    error = common_pb2.ErrorDetail(message="a task failed")
    for run in (failing, done):
        exe.FailWorkflowRun(ex.FailWorkflowRunRequest(run_id=run.run_id, error=error))

    plan = rec.RecoverAgent(recovery_pb2.RecoverAgentRequest(agent_id="a")).plan
    listed = [t.task_run_id for t in plan.failed_task_runs]
    assert plan.failed_task_runs_truncated and 0 < len(listed) < 12
    assert listed == failed_ids[::-1][: len(listed)]  # the newest

    request = recovery_pb2.RetryWorkflowRunRequest(run_id=done.run_id, request_id="r-1")
    retried = rec.RetryWorkflowRun(request, timeout=30)
    assert retried.carried_over_truncated and 0 < len(retried.carried_over) < 12
    assert not retried.pending_task_ids_truncated
    assert rec.RetryWorkflowRun(request, timeout=30) == retried  # the stored answer
    carried, _ = page_all(
        exe.ListTaskRuns,
        ex.ListTaskRunsRequest(run_id=retried.run.run_id, page_size=1000),
        "task_runs",
    )
    assert [t.task_id for t in carried] == [f"c{n}" for n in range(12)]  # all of them

    whole = recovery_pb2.GetCompensationPlanRequest(run_id=done.run_id)  # page_size 0
    with pytest.raises(grpc.RpcError) as refused:  # as before paging: never a part
        rec.GetCompensationPlan(whole)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "page_size" in (refused.value.details() or "")
    steps, step_pages = page_all(
        rec.GetCompensationPlan,
        recovery_pb2.GetCompensationPlanRequest(run_id=done.run_id, page_size=1000),
        "steps",
    )
    assert [s.task_id for s in steps] == [f"c{n}" for n in reversed(range(12))]
    assert step_pages >= 2
    two = rec.GetCompensationPlan(
        recovery_pb2.GetCompensationPlanRequest(run_id=done.run_id, page_size=2)
    )
    assert [s.task_id for s in two.steps] == ["c11", "c10"] and two.next_page_token

    labels = {f"key-{k:02d}-{'k' * 200}": "v" * 250 for k in range(64)}  # ~30 KB
    for _ in range(40):
        rec.CreateCheckpoint(recovery_pb2.CreateCheckpointRequest(agent_id="a", labels=labels))
    for dry_run in (True, False):
        pruned = rec.PruneCheckpoints(
            recovery_pb2.PruneCheckpointsRequest(agent_id="a", keep_last=1, dry_run=dry_run)
        )
        assert pruned.deleted_count == 39 and pruned.deleted_truncated
        assert 0 < len(pruned.deleted) < 39
    left = rec.ListCheckpoints(recovery_pb2.ListCheckpointsRequest(agent_id="a"))
    assert len(left.checkpoints) == 1


def test_a_batch_of_creates_writes_only_what_its_answer_can_carry(one_mib: Stubs) -> None:
    # Each result echoes its manifest's labels, and a refused request its violations: a
    # request within the 1 MiB limit could answer with more, after its writes committed.
    lc, _, rec, _ = one_mib
    lc.CreateAgent(pb.CreateAgentRequest(agent_id="a", type="t"))
    labels = {f"k{j:02d}" + "k" * 230: "v" * 250 for j in range(20)}
    create = recovery_pb2.CreateCheckpointRequest(agent_id="a", labels=labels)
    batch = recovery_pb2.BatchCreateCheckpointsRequest(requests=[create] * 100)
    assert batch.ByteSize() < 1 << 20  # the request itself is within the limit
    answer = rec.BatchCreateCheckpoints(batch, timeout=30)
    kinds = [r.WhichOneof("result") for r in answer.results]
    written = kinds.count("response")
    assert 50 < written < 100 and kinds == ["response"] * written + ["error"] * (100 - written)
    for refused in answer.results[written:]:
        assert refused.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "send it again" in refused.error.message
    listed, _ = page_all(
        rec.ListCheckpoints,
        recovery_pb2.ListCheckpointsRequest(agent_id="a", page_size=1000),
        "checkpoints",
    )
    assert len(listed) == written  # the refused ones were not written

    # Refused requests answer with their violations, named by the labels'
    # escaped keys: up to ~50 KB each from ~3 KB of request.
    bad = {"\x01" * 31 + f"\x00{j}": "\x00" for j in range(64)}
    hostile = recovery_pb2.BatchCreateCheckpointsRequest(
        requests=[recovery_pb2.CreateCheckpointRequest(agent_id="a", request_id="ok")]
        + [recovery_pb2.CreateCheckpointRequest(agent_id="a", labels=bad)] * 99
    )
    answer = rec.BatchCreateCheckpoints(hostile, timeout=30)
    assert answer.results[0].WhichOneof("result") == "response"
    codes = {r.error.code for r in answer.results[1:]}
    assert codes == {
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
    }


def test_a_plan_whose_fixed_parts_cannot_fit_says_so_precisely(one_mib: Stubs) -> None:
    # Each record fits in its own answer under 1 MiB; the plan would carry both.
    lc, exe, rec, _ = one_mib
    lc.CreateAgent(pb.CreateAgentRequest(agent_id="a", type="t"))
    text = "\U0001f600" * 252
    labels = {f"{k:04d}" + text: text for k in range(64)}  # ~130 KB of labels
    rec.CreateCheckpoint(
        recovery_pb2.CreateCheckpointRequest(agent_id="a", payload=b"x", labels=labels)
    )
    run = exe.StartWorkflowRun(ex.StartWorkflowRunRequest(workflow_name="w")).run
    task = exe.StartTaskRun(
        ex.StartTaskRunRequest(
            run_id=run.run_id, task_id="t", agent_id="a", input_json=big_json(0, 960_000)
        )
    ).task_run
    exe.FailTaskRun(
        ex.FailTaskRunRequest(
            task_run_id=task.task_run_id, error=common_pb2.ErrorDetail(message="no")
        )
    )
    with pytest.raises(grpc.RpcError) as refused:
        rec.RecoverAgent(recovery_pb2.RecoverAgentRequest(agent_id="a"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "raise max_message_bytes" in (refused.value.details() or "")


# -- no write makes a record bigger than one answer --------------------------------------------
def too_large(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(refused.value).reason == "RECORD_TOO_LARGE"
    assert "max_message_bytes" in (refused.value.details() or "")
    return refused.value


def test_writes_that_would_outgrow_one_answer_are_refused_and_write_nothing(
    one_mib: Stubs,
) -> None:
    # Under 1 MiB, one answer carries 960 KiB of records: documents of 400-500 KB each fit
    # in their requests, but not all together in one record.
    lc, exe, _, _ = one_mib
    doc = big_json(0, 400_000)
    lc.CreateAgent(pb.CreateAgentRequest(agent_id="a", type="t", config_json=big_json(0, 500_000)))
    too_large(
        lc.ReportAgentError,
        pb.ReportAgentErrorRequest(agent_id="a", message="boom", details_json=big_json(1, 500_000)),
    )
    too_large(
        lc.UpdateAgent,
        pb.UpdateAgentRequest(agent_id="a", config_json=big_json(2, 985_000), update_config=True),
    )
    agent = lc.GetAgent(pb.GetAgentRequest(agent_id="a")).agent
    assert agent.status == pb.AGENT_STATUS_CREATED and not agent.HasField("last_error")
    assert agent.config_json == big_json(0, 500_000)
    reported = lc.ReportAgentError(pb.ReportAgentErrorRequest(agent_id="a", message="small"))
    assert reported.agent.status == pb.AGENT_STATUS_ERROR

    run = exe.StartWorkflowRun(
        ex.StartWorkflowRunRequest(workflow_name="w", input_json=big_json(0, 500_000))
    ).run
    too_large(
        exe.CompleteWorkflowRun,
        ex.CompleteWorkflowRunRequest(run_id=run.run_id, result_json=big_json(1, 500_000)),
    )
    too_large(
        exe.FailWorkflowRun,
        ex.FailWorkflowRunRequest(
            run_id=run.run_id,
            error=common_pb2.ErrorDetail(message="no", details_json=big_json(1, 500_000)),
        ),
    )
    assert exe.GetWorkflowRun(ex.GetWorkflowRunRequest(run_id=run.run_id)).run.status == (
        ex.RUN_STATUS_RUNNING
    )

    task = exe.StartTaskRun(
        ex.StartTaskRunRequest(run_id=run.run_id, task_id="t", agent_id="a", input_json=doc)
    ).task_run
    exe.Heartbeat(ex.HeartbeatRequest(task_run_id=task.task_run_id, progress_json=doc))
    too_large(
        exe.Heartbeat,
        ex.HeartbeatRequest(task_run_id=task.task_run_id, progress_json=big_json(1, 600_000)),
    )
    too_large(
        exe.CompleteTaskRun,
        ex.CompleteTaskRunRequest(task_run_id=task.task_run_id, result_json=doc),
    )
    too_large(
        exe.FailTaskRun,
        ex.FailTaskRunRequest(
            task_run_id=task.task_run_id,
            error=common_pb2.ErrorDetail(message="no", details_json=doc),
        ),
    )
    stored = exe.GetTaskRun(ex.GetTaskRunRequest(task_run_id=task.task_run_id)).task_run
    assert stored.status == ex.TASK_STATUS_RUNNING and stored.progress_json == doc
    exe.CompleteTaskRun(ex.CompleteTaskRunRequest(task_run_id=task.task_run_id))
    listed = exe.ListTaskRuns(ex.ListTaskRunsRequest(run_id=run.run_id)).task_runs
    assert [t.task_run_id for t in listed] == [task.task_run_id]


def test_state_documents_stop_at_what_one_answer_carries(one_mib: Stubs) -> None:
    lc, _, _, st = one_mib
    lc.CreateAgent(pb.CreateAgentRequest(agent_id="a", type="t"))
    st.SaveState(state_pb2.SaveStateRequest(agent_id="a", document_json=big_json(0, 600_000)))
    with pytest.raises(grpc.RpcError) as refused:  # the patch would make it ~1 MB
        st.PatchState(
            state_pb2.PatchStateRequest(
                agent_id="a", patch_json=b'{"more": "%s"}' % (b"y" * 400_000)
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the limit of" in (refused.value.details() or "")
    got = st.GetState(state_pb2.GetStateRequest(agent_id="a")).state
    assert got.version == 1 and got.document_json == big_json(0, 600_000)


def filling(fixed: int, room: int, *, wrap: bool = False) -> bytes:
    """A JSON document that brings a record of ``fixed`` weight, plus ``room``, to exactly
    what one answer carries under 1 MiB: the most a write may leave. A string, or with
    ``wrap`` an object holding one."""
    length = paging.page_budget(1 << 20) - room - fixed - paging.FIELD_BYTES
    head, tail = (b'{"p":"', b'"}') if wrap else (b'"', b'"')
    return head + b"x" * (length - len(head) - len(tail)) + tail


def test_records_accepted_at_the_limit_can_still_be_ended(one_mib: Stubs) -> None:
    # Each record keeps room for the write that ends it: the longest error message (4096
    # characters of 4 bytes) without details, or no result.
    lc, exe, _, _ = one_mib
    longest = "\U0001f600" * 4096
    room = weights.COPY_BYTES + weights.END_BYTES
    shape = AgentRecord("default", "a", "t", b"", {}, "CREATED", 1, 0, 0, 1, 1)
    config = filling(weights.agent(shape), weights.END_BYTES, wrap=True)
    lc.CreateAgent(pb.CreateAgentRequest(agent_id="a", type="t", config_json=config))
    too_large(  # one byte more would not leave the room
        lc.CreateAgent, pb.CreateAgentRequest(agent_id="b", type="t", config_json=config + b" ")
    )
    lc.ReportAgentError(pb.ReportAgentErrorRequest(agent_id="a", message=longest))

    probe = exe.StartWorkflowRun(ex.StartWorkflowRunRequest(workflow_name="w")).run
    run_shape = RunRecord(
        "default", probe.run_id, "w", None, "RUNNING", b"", {}, 1, probe.run_id, 1, 1
    )
    runs = [
        exe.StartWorkflowRun(
            ex.StartWorkflowRunRequest(
                workflow_name="w", input_json=filling(weights.run(run_shape), room)
            )
        ).run
        for _ in range(2)
    ]
    exe.FailWorkflowRun(
        ex.FailWorkflowRunRequest(
            run_id=runs[0].run_id, error=common_pb2.ErrorDetail(message=longest)
        )
    )
    exe.CompleteWorkflowRun(ex.CompleteWorkflowRunRequest(run_id=runs[1].run_id))

    task_shape = TaskRunRecord(
        "default", "task-" + "0" * 26, probe.run_id, "t", "a", 1, "RUNNING", b"", 1, 1
    )
    input_json = filling(weights.task_run(task_shape), room)
    tasks = [
        exe.StartTaskRun(
            ex.StartTaskRunRequest(
                run_id=probe.run_id, task_id="t", agent_id="a", input_json=input_json
            )
        ).task_run
        for _ in range(2)
    ]
    assert len(tasks[0].task_run_id) == len(task_shape.task_run_id)
    # Progress would grow it, a heartbeat alone does not.
    too_large(
        exe.Heartbeat, ex.HeartbeatRequest(task_run_id=tasks[0].task_run_id, progress_json=b"0")
    )
    exe.Heartbeat(ex.HeartbeatRequest(task_run_id=tasks[0].task_run_id))
    exe.FailTaskRun(
        ex.FailTaskRunRequest(
            task_run_id=tasks[0].task_run_id, error=common_pb2.ErrorDetail(message=longest)
        )
    )
    exe.CompleteTaskRun(ex.CompleteTaskRunRequest(task_run_id=tasks[1].task_run_id))
    listed, pages = page_all(
        exe.ListTaskRuns, ex.ListTaskRunsRequest(run_id=probe.run_id, page_size=1000), "task_runs"
    )
    assert pages == 2  # each fills an answer
    assert [t.status for t in listed] == [
        ex.TASK_STATUS_FAILED,
        ex.TASK_STATUS_COMPLETED,
    ]


def test_a_state_too_big_once_upgraded_on_read_is_refused_by_name(settings: Settings) -> None:
    # Re-serialising can grow a document: 1e15 reads back as 1000000000000000.0.
    server = ServerThread(
        replace(
            settings,
            max_message_bytes=1 << 20,
            state_migrations="tests.support.sample_migrations",
        )
    ).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            lc = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
            st = state_pb2_grpc.StateServiceStub(channel)
            lc.CreateAgent(pb.CreateAgentRequest(agent_id="a", type="counter"))
            document = b'{"count":1,"pad":[' + b",".join([b"1e15"] * 150_000) + b"]}"
            st.SaveState(
                state_pb2.SaveStateRequest(agent_id="a", document_json=document, schema_version=1)
            )
            refused = too_large(st.GetState, state_pb2.GetStateRequest(agent_id="a"))
            assert "agent 'a'" in (refused.details() or "")
            too_large(st.BatchGetStates, state_pb2.BatchGetStatesRequest(agent_ids=["a"]))
            listed = st.ListStateVersions(
                state_pb2.ListStateVersionsRequest(agent_id="a", include_documents=True)
            )
            assert listed.versions[0].document_json == document  # as stored
    finally:
        server.close()
