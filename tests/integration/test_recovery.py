"""Recovery over real gRPC on SQLite and PostgreSQL: recovery plans, partial re-runs,
compensation, run archives (file://, memory://, s3://), the background retention job and
its lease."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from sqlalchemy import create_engine, update

from stateward.server.domain.planner import Strategy
from stateward.server.services.checkpoints import INLINE_MAX
from stateward.storage import Database, leases, migrate, schema
from stateward.storage.archive import read_archive
from stateward.v1 import common_pb2, execution_pb2, lifecycle_pb2, recovery_pb2
from tests.support.recovery import Client, start_server
from tests.support.s3 import S3Endpoint, start_or_skip
from tests.support.server import ServerThread

pb = recovery_pb2
ex = execution_pb2
S = 1_000_000
STRATEGY = {s: pb.RecoveryStrategy.Value(f"RECOVERY_STRATEGY_{s.value}") for s in Strategy}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    yield start_or_skip()  # shared by the test process; stopped at exit


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    running = start_server(request, tmp_path_factory, request.param, "file", sweep_interval=0.05)
    yield running
    running.close()


@pytest.fixture
def client(served: ServerThread) -> Iterator[Client]:
    c = Client(served.target, served.settings, namespace=f"t-{uuid.uuid4().hex[:16]}")
    yield c
    c.close()


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


# -- helpers driving the execution service --------------------------------------------------------
def start_run(client: Client, agent: str) -> ex.WorkflowRun:
    request = ex.StartWorkflowRunRequest(workflow_name="wf", agent_id=agent, input_json=b'{"n":1}')
    return client.execution.StartWorkflowRun(request).run


def start_task(client: Client, run_id: str, task_id: str, agent: str, **extra: Any) -> ex.TaskRun:
    request = ex.StartTaskRunRequest(run_id=run_id, task_id=task_id, agent_id=agent, **extra)
    return client.execution.StartTaskRun(request).task_run


def complete(client: Client, task: ex.TaskRun, result: Any, compensation: Any = None) -> None:
    client.execution.CompleteTaskRun(
        ex.CompleteTaskRunRequest(
            task_run_id=task.task_run_id,
            result_json=json.dumps(result).encode(),
            compensation_json=json.dumps(compensation).encode() if compensation else b"",
        )
    )


def fail(client: Client, task: ex.TaskRun, kind: int, message: str = "it broke") -> None:
    error = common_pb2.ErrorDetail(message=message, kind=kind)  # type: ignore[arg-type]
    client.execution.FailTaskRun(ex.FailTaskRunRequest(task_run_id=task.task_run_id, error=error))


def fail_run(client: Client, run_id: str) -> None:
    error = common_pb2.ErrorDetail(message="a task failed", kind=common_pb2.ERROR_KIND_DEPENDENCY)
    client.execution.FailWorkflowRun(ex.FailWorkflowRunRequest(run_id=run_id, error=error))


def plan(client: Client, agent: str) -> pb.RecoveryPlan:
    return client.recovery.RecoverAgent(pb.RecoverAgentRequest(agent_id=agent)).plan


def seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


# -- recovery plans -------------------------------------------------------------------------------
def test_a_healthy_agent_needs_nothing(client: Client) -> None:
    agent = client.agent(state={"ok": 1})
    made = client.create(agent, b"p")
    result = plan(client, agent)
    assert result.strategy == STRATEGY[Strategy.NONE]
    assert result.agent_status == lifecycle_pb2.AGENT_STATUS_CREATED
    assert result.last_good_state_version == 1
    assert result.checkpoint.checkpoint_id == made.checkpoint_id
    assert not result.HasField("last_failure") and list(result.failed_task_runs) == []
    missing = pb.RecoverAgentRequest(agent_id="nobody")
    assert code_of(lambda: client.recovery.RecoverAgent(missing)) == grpc.StatusCode.NOT_FOUND


def test_a_timeout_suggests_a_longer_timeout(client: Client) -> None:
    agent = client.agent()
    run = start_run(client, agent)
    task = start_task(
        client, run.run_id, "search", agent, timeout=duration_pb2.Duration(seconds=10)
    )
    fail(client, task, common_pb2.ERROR_KIND_TIMEOUT, "the model call took too long")
    result = plan(client, agent)
    assert result.strategy == STRATEGY[Strategy.RETRY_WITH_LONGER_TIMEOUT]
    assert seconds(result.suggested_timeout) == 20.0  # 10 s x the default factor 2
    assert result.last_failure.task_run_id == task.task_run_id
    assert [t.task_run_id for t in result.failed_task_runs] == [task.task_run_id]
    assert "took too long" in result.explanation


def test_a_lease_expired_by_the_sweeper_plans_as_a_timeout(client: Client) -> None:
    agent = client.agent()
    run = start_run(client, agent)
    task = start_task(
        client,
        run.run_id,
        "slow",
        agent,
        heartbeat_timeout=duration_pb2.Duration(nanos=200_000_000),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = client.execution.GetTaskRun(ex.GetTaskRunRequest(task_run_id=task.task_run_id))
        if got.task_run.status == ex.TASK_STATUS_TIMED_OUT:
            break
        time.sleep(0.05)
    result = plan(client, agent)
    assert result.strategy == STRATEGY[Strategy.RETRY_WITH_LONGER_TIMEOUT]
    assert seconds(result.suggested_timeout) == pytest.approx(0.4)


def test_resource_exhaustion_backs_off_by_attempt(client: Client) -> None:
    agent = client.agent()
    run = start_run(client, agent)
    first = start_task(client, run.run_id, "call-llm", agent)
    fail(client, first, common_pb2.ERROR_KIND_RESOURCE_EXHAUSTED, "quota")
    result = plan(client, agent)
    assert result.strategy == STRATEGY[Strategy.RETRY_WITH_BACKOFF]
    assert 0.5 <= seconds(result.retry_delay) < 1.0  # base 1 s, attempt 1, equal jitter
    second = start_task(client, run.run_id, "call-llm", agent)
    assert second.attempt == 2
    fail(client, second, common_pb2.ERROR_KIND_RESOURCE_EXHAUSTED, "quota again")
    result = plan(client, agent)
    assert 1.0 <= seconds(result.retry_delay) < 2.0
    # Only the newest attempt of the task still needs work.
    assert [t.task_run_id for t in result.failed_task_runs] == [second.task_run_id]


def test_other_failures_need_a_person_and_words_are_only_a_fallback(client: Client) -> None:
    agent = client.agent()
    run = start_run(client, agent)
    broken = start_task(client, run.run_id, "tool", agent)
    fail(client, broken, common_pb2.ERROR_KIND_DEPENDENCY, "timeout talking to the tool")
    result = plan(client, agent)
    assert result.strategy == STRATEGY[Strategy.MANUAL_INTERVENTION]  # the kind decides
    assert "timeout talking to the tool" in result.explanation
    vague = start_task(client, run.run_id, "tool", agent)
    fail(client, vague, common_pb2.ERROR_KIND_UNSPECIFIED, "429: rate limit exceeded")
    assert plan(client, agent).strategy == STRATEGY[Strategy.RETRY_WITH_BACKOFF]


def test_an_agent_error_without_task_runs_is_planned_from_its_kind(client: Client) -> None:
    agent = client.agent()
    client.lifecycle.ReportAgentError(
        lifecycle_pb2.ReportAgentErrorRequest(
            agent_id=agent, message="invariant broken", kind=common_pb2.ERROR_KIND_INTERNAL
        )
    )
    result = plan(client, agent)
    assert result.strategy == STRATEGY[Strategy.MANUAL_INTERVENTION]
    assert result.agent_status == lifecycle_pb2.AGENT_STATUS_ERROR
    assert "invariant broken" in result.explanation


def test_unreadable_state_restores_the_newest_verified_checkpoint(
    client: Client, served: ServerThread
) -> None:
    agent = client.agent(state={"good": 1})
    good = client.create(agent, b"good payload")
    client.save(agent, {"good": 2})
    bad = client.create(agent, b"this blob will rot" * INLINE_MAX)  # a blob
    path = client.blobs.path(client.key(agent, bad.checkpoint_id))
    client.blobs.fs.pipe_file(path, b"rotten bytes here!")
    corrupt_state(served, client.namespace, agent, version=2)

    result = plan(client, agent)
    assert result.strategy == STRATEGY[Strategy.RESTORE_CHECKPOINT]
    assert result.checkpoint.checkpoint_id == good.checkpoint_id  # the newer one failed to verify
    assert result.last_good_state_version == 1
    assert good.checkpoint_id in result.explanation

    restored = client.recovery.RestoreCheckpoint(
        pb.RestoreCheckpointRequest(checkpoint_id=result.checkpoint.checkpoint_id)
    )
    assert restored.state_version == 3
    after = plan(client, agent)
    assert after.strategy == STRATEGY[Strategy.NONE] and after.last_good_state_version == 3


def corrupt_state(served: ServerThread, namespace: str, agent: str, *, version: int) -> None:
    """Break a stored state document behind the server's back (disk or operator error)."""
    engine = create_engine(served.settings.database_url)
    s = schema.states
    try:
        with engine.begin() as conn:
            conn.execute(
                update(s)
                .where(s.c.namespace == namespace, s.c.agent_id == agent, s.c.version == version)
                .values(document=b'{"truncated":')
            )
    finally:
        engine.dispose()


# -- partial re-runs ------------------------------------------------------------------------------
def test_retry_carries_completed_tasks_and_lists_the_rest(client: Client) -> None:
    agent = client.agent()
    run = start_run(client, agent)
    fetch = start_task(client, run.run_id, "fetch", agent)
    complete(client, fetch, {"rows": 10}, compensation={"undo": "delete rows"})
    parse = start_task(client, run.run_id, "parse", agent)
    fail(client, parse, common_pb2.ERROR_KIND_INVALID_INPUT, "bad row 7")
    load = start_task(client, run.run_id, "load", agent)
    complete(client, load, {"loaded": True})
    fail_run(client, run.run_id)

    running = start_run(client, agent)
    assert (
        code_of(
            lambda: client.recovery.RetryWorkflowRun(
                pb.RetryWorkflowRunRequest(run_id=running.run_id)
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )

    retry = client.recovery.RetryWorkflowRun(
        pb.RetryWorkflowRunRequest(run_id=run.run_id, request_id="retry-1")
    )
    new = retry.run
    assert (new.attempt, new.retry_of_run_id, new.root_run_id) == (2, run.run_id, run.run_id)
    assert new.status == ex.RUN_STATUS_RUNNING and new.input_json == b'{"n":1}'
    carried = {t.task_id: t for t in retry.carried_over}
    assert set(carried) == {"fetch", "load"}
    assert carried["fetch"].carried_from_task_run_id == fetch.task_run_id
    assert carried["fetch"].status == ex.TASK_STATUS_COMPLETED
    assert json.loads(carried["fetch"].result_json) == {"rows": 10}
    assert list(retry.pending_task_ids) == ["parse"]
    again = client.recovery.RetryWorkflowRun(
        pb.RetryWorkflowRunRequest(run_id=run.run_id, request_id="retry-1")
    )
    assert again == retry  # the same attempt, not a third one
    twice = pb.RetryWorkflowRunRequest(run_id=run.run_id)
    with pytest.raises(grpc.RpcError) as caught:
        client.recovery.RetryWorkflowRun(twice)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert new.run_id in (caught.value.details() or "")

    # The carried task runs are in the new run; only the failed task runs again.
    listed = client.execution.ListTaskRuns(ex.ListTaskRunsRequest(run_id=new.run_id)).task_runs
    assert sorted(t.task_id for t in listed) == ["fetch", "load"]
    reparse = start_task(client, new.run_id, "parse", agent)
    assert reparse.attempt == 2
    fail(client, reparse, common_pb2.ERROR_KIND_INVALID_INPUT, "still bad")
    report = start_task(client, new.run_id, "report", agent)
    fail(client, report, common_pb2.ERROR_KIND_INTERNAL, "crash")
    fail_run(client, new.run_id)
    third = client.recovery.RetryWorkflowRun(pb.RetryWorkflowRunRequest(run_id=new.run_id)).run
    chain = client.execution.ListWorkflowRuns(ex.ListWorkflowRunsRequest(root_run_id=run.run_id))
    assert [r.attempt for r in chain.runs] == [3, 2, 1]
    third_tasks = client.execution.ListTaskRuns(ex.ListTaskRunsRequest(run_id=third.run_id))
    origins = {t.task_id: t.carried_from_task_run_id for t in third_tasks.task_runs}
    assert origins == {"fetch": fetch.task_run_id, "load": load.task_run_id}
    events = client.execution.ListEvents(
        ex.ListEventsRequest(filter=ex.EventFilter(run_id=third.run_id, types=["run.retried"]))
    ).events
    assert len(events) == 1 and json.loads(events[0].data_json)["pending_task_ids"] == [
        "parse",
        "report",
    ]


def test_an_interrupted_run_can_be_retried_and_its_failure_leaves_the_plan(client: Client) -> None:
    agent = client.agent()
    run = start_run(client, agent)
    done = start_task(client, run.run_id, "a", agent)
    complete(client, done, 1)
    broken = start_task(client, run.run_id, "b", agent)
    fail(client, broken, common_pb2.ERROR_KIND_TIMEOUT, "slow")
    assert plan(client, agent).strategy == STRATEGY[Strategy.RETRY_WITH_LONGER_TIMEOUT]
    client.execution.CancelWorkflowRun(ex.CancelWorkflowRunRequest(run_id=run.run_id))
    cancelled = pb.RetryWorkflowRunRequest(run_id=run.run_id)
    assert code_of(lambda: client.recovery.RetryWorkflowRun(cancelled)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    other = start_run(client, agent)
    failing = start_task(client, other.run_id, "b", agent)
    fail(client, failing, common_pb2.ERROR_KIND_TIMEOUT, "slow")
    fail_run(client, other.run_id)
    client.recovery.RetryWorkflowRun(pb.RetryWorkflowRunRequest(run_id=other.run_id))
    result = plan(client, agent)  # the retried run's failure is handled by its new attempt
    assert result.strategy == STRATEGY[Strategy.NONE]
    assert result.last_failure.task_run_id == failing.task_run_id  # still reported as history


# -- compensation ---------------------------------------------------------------------------------
def test_compensation_plan_runs_backwards_and_records_progress(client: Client) -> None:
    agent = client.agent()
    run = start_run(client, agent)
    steps = []
    for name in ("reserve", "charge", "notify", "ship"):
        task = start_task(client, run.run_id, name, agent)
        if name == "notify":
            complete(client, task, "sent")  # nothing to undo
        elif name == "ship":
            fail(client, task, common_pb2.ERROR_KIND_DEPENDENCY, "carrier down")
        else:
            complete(client, task, "ok", compensation={"undo": name})
        steps.append(task)
    early = pb.GetCompensationPlanRequest(run_id=run.run_id)
    assert code_of(lambda: client.recovery.GetCompensationPlan(early)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    fail_run(client, run.run_id)
    plan_steps = client.recovery.GetCompensationPlan(early).steps
    assert [s.task_id for s in plan_steps] == ["charge", "reserve"]
    assert json.loads(plan_steps[0].compensation_json) == {"undo": "charge"}
    assert not any(s.done for s in plan_steps)

    charge = steps[1].task_run_id
    done = client.recovery.CompleteCompensation(
        pb.CompleteCompensationRequest(run_id=run.run_id, task_run_id=charge)
    ).step
    assert done.done and done.HasField("done_time")
    repeat = client.recovery.CompleteCompensation(
        pb.CompleteCompensationRequest(run_id=run.run_id, task_run_id=charge)
    ).step
    assert repeat == done  # marking twice changes nothing
    after = client.recovery.GetCompensationPlan(early).steps
    assert [(s.task_id, s.done) for s in after] == [("charge", True), ("reserve", False)]
    events = client.execution.ListEvents(
        ex.ListEventsRequest(filter=ex.EventFilter(run_id=run.run_id, types=["task.compensated"]))
    ).events
    assert [e.task_run_id for e in events] == [charge]

    for task, code in [
        (steps[2], grpc.StatusCode.FAILED_PRECONDITION),  # completed, nothing recorded
        (steps[3], grpc.StatusCode.FAILED_PRECONDITION),  # failed
    ]:
        request = pb.CompleteCompensationRequest(run_id=run.run_id, task_run_id=task.task_run_id)
        assert code_of(lambda r=request: client.recovery.CompleteCompensation(r)) == code
    foreign = pb.CompleteCompensationRequest(run_id=run.run_id, task_run_id="task-nope")
    assert code_of(lambda: client.recovery.CompleteCompensation(foreign)) == (
        grpc.StatusCode.NOT_FOUND
    )


# -- archives -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "suffix"),
    [
        ("file", ".jsonl.gz"),
        ("memory", ".jsonl.zst"),
        pytest.param("s3", ".jsonl.gz", marks=pytest.mark.s3),
    ],
)
def test_archive_runs_writes_verifies_then_deletes(
    served: ServerThread,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    where: str,
    suffix: str,
) -> None:
    storage_options: dict[str, Any] = {}
    server = served
    if where == "file":
        url = f"file://{served.settings.data_dir}/archives/{uuid.uuid4().hex}{suffix}"
    elif where == "memory":  # client URLs must be under the server's archive root
        database = "postgres" if "postgresql" in served.settings.database_url else "sqlite"
        root = f"memory://archives-{uuid.uuid4().hex}"
        server = start_server(request, tmp_path_factory, database, "file", archive_url=root)
        url = f"{root}/{uuid.uuid4().hex}{suffix}"
    else:  # a server whose storage options reach the moto endpoint
        database = "postgres" if "postgresql" in served.settings.database_url else "sqlite"
        s3: S3Endpoint = request.getfixturevalue("s3")
        root = f"s3://{s3.bucket()}/archives"
        server = start_server(request, tmp_path_factory, database, "s3", archive_url=root)
        url = f"{root}/runs{suffix}"
        storage_options = s3.storage_options
    client = Client(server.target, server.settings, namespace=f"t-{uuid.uuid4().hex[:16]}")
    try:
        archive_and_check(client, url, storage_options)
    finally:
        client.close()
        if server is not served:
            server.close()


def archive_and_check(client: Client, url: str, storage_options: dict[str, Any]) -> None:
    agent = client.agent()
    finished = []
    for n in range(3):
        run = start_run(client, agent)
        task = start_task(client, run.run_id, f"t{n}", agent)
        complete(client, task, {"n": n, "big": 2**63 - 1})
        notes = [
            ex.NewEvent(type=f"note.{i % 2}", data_json=b'{"i":%d}' % i, run_id=run.run_id)
            for i in range(4)
        ]  # stored as one packed row: archived one line per event all the same
        client.execution.AppendEvents(ex.AppendEventsRequest(events=notes))
        client.execution.CompleteWorkflowRun(
            ex.CompleteWorkflowRunRequest(run_id=run.run_id, result_json=b'"done"')
        )
        finished.append(run.run_id)
    unfinished = start_run(client, agent)
    cutoff = timestamp_pb2.Timestamp()
    cutoff.GetCurrentTime()
    dry = client.recovery.ArchiveRuns(
        pb.ArchiveRunsRequest(ended_before=cutoff, archive_url=url, dry_run=True)
    )
    assert (dry.runs, dry.task_runs) == (3, 3) and dry.events >= 9 + 12
    done = client.recovery.ArchiveRuns(pb.ArchiveRunsRequest(ended_before=cutoff, archive_url=url))
    assert (done.archive_url, done.runs, done.task_runs, done.events) == (url, 3, 3, dry.events)
    records = list(read_archive(url, storage_options))
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "header" and kinds[-1] == "trailer"
    assert kinds.count("run") == 3 and kinds.count("event") == dry.events
    archived_runs = [r for r in records if r["kind"] == "run"]
    assert sorted(r["run_id"] for r in archived_runs) == sorted(finished)
    events = [r for r in records if r["kind"] == "event"]
    assert len({r["sequence"] for r in events}) == len(events) and "span" not in events[0]
    notes = [(r["run_id"], r["type"], r["data"]) for r in events if r["type"].startswith("note.")]
    assert notes == [
        (run_id, f"note.{i % 2}", f'{{"i":{i}}}') for run_id in finished for i in range(4)
    ]
    tasks = [r for r in records if r["kind"] == "task_run"]
    assert json.loads(tasks[0]["result"])["big"] == 2**63 - 1  # documents kept exactly
    for run_id in finished:
        gone = ex.GetWorkflowRunRequest(run_id=run_id)
        assert code_of(lambda g=gone: client.execution.GetWorkflowRun(g)) == (
            grpc.StatusCode.NOT_FOUND
        )
    still = client.execution.GetWorkflowRun(ex.GetWorkflowRunRequest(run_id=unfinished.run_id))
    assert still.run.status == ex.RUN_STATUS_RUNNING
    again = client.recovery.ArchiveRuns(pb.ArchiveRunsRequest(ended_before=cutoff))
    assert (again.runs, again.archive_url) == (0, "")  # nothing left: no empty file written
    finish_one(client, agent)
    later = timestamp_pb2.Timestamp()
    later.GetCurrentTime()
    exists = pb.ArchiveRunsRequest(ended_before=later, archive_url=url)
    assert code_of(lambda: client.recovery.ArchiveRuns(exists)) == grpc.StatusCode.ALREADY_EXISTS


def finish_one(client: Client, agent: str) -> None:
    run = start_run(client, agent)
    client.execution.CompleteWorkflowRun(ex.CompleteWorkflowRunRequest(run_id=run.run_id))
    time.sleep(0.002)  # a cutoff taken next is after its end


def test_archive_requests_are_checked(client: Client) -> None:
    cutoff = timestamp_pb2.Timestamp(seconds=int(time.time()) + 60)
    bad = [
        pb.ArchiveRunsRequest(),  # no cutoff
        pb.ArchiveRunsRequest(ended_before=cutoff, archive_url="/tmp/x.jsonl.gz"),
        pb.ArchiveRunsRequest(ended_before=cutoff, archive_url="ftp://h/x.jsonl.gz"),
        pb.ArchiveRunsRequest(ended_before=cutoff, archive_url="file:///tmp/x.json"),
        pb.ArchiveRunsRequest(ended_before=cutoff, archive_url="file:///tmp/../etc/x.jsonl.gz"),
    ]
    for request in bad:
        assert code_of(lambda r=request: client.recovery.ArchiveRuns(r)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )


def test_archive_url_is_confined_to_the_archive_root(
    served: ServerThread, client: Client, tmp_path: Path
) -> None:
    """A namespace admin cannot make the server write outside the configured archive root."""
    finish_one(client, client.agent())
    cutoff = timestamp_pb2.Timestamp(seconds=int(time.time()) + 60)
    root = served.settings.resolved_archive_url
    outside = [
        f"file://{tmp_path}/x.jsonl.gz",  # another directory
        f"file://{root.removeprefix('file://')}-evil/x.jsonl.gz",  # a sibling sharing the prefix
        "memory://archives/x.jsonl.gz",  # another scheme
        f"{root}/../x.jsonl.gz",
    ]
    for url in outside:
        request = pb.ArchiveRunsRequest(ended_before=cutoff, archive_url=url)
        with pytest.raises(grpc.RpcError) as refused:
            client.recovery.ArchiveRuns(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, url
        assert root in (refused.value.details() or "") or ".." in url
    assert list(tmp_path.iterdir()) == []
    inside = pb.ArchiveRunsRequest(ended_before=cutoff, archive_url=f"{root}/sub/ok.jsonl.gz")
    assert client.recovery.ArchiveRuns(inside).runs == 1


# -- the background job ---------------------------------------------------------------------------
def test_background_retention_prunes_collects_and_expires(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = start_server(
        request,
        tmp_path_factory,
        "sqlite",
        "file",
        retention_interval=0.1,
        checkpoint_keep_last=2,
        blob_gc_grace=0.0,
        idempotency_window=0.3,
    )
    client = Client(running.target, running.settings)
    try:
        agent = client.agent()
        payloads = [f"{n}".encode() * (INLINE_MAX + 1) for n in range(4)]  # blobs
        made = [client.create(agent, payloads[n], request_id=f"r-{n}") for n in range(4)]
        orphan = client.key(agent, "ckpt_lost")
        client.blobs.put(orphan, b"no manifest")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = client.recovery.ListCheckpoints(pb.ListCheckpointsRequest()).checkpoints
            if len(listed) == 2 and orphan not in client.keys():
                break
            time.sleep(0.05)
        assert [c.checkpoint_id for c in listed] == [made[3].checkpoint_id, made[2].checkpoint_id]
        assert client.keys() == sorted(client.key(agent, c.checkpoint_id) for c in made[2:])
        while time.monotonic() < deadline:  # once the answer expires, the id is free again
            fresh = client.create(agent, payloads[3], request_id="r-3")
            if fresh.checkpoint_id != made[3].checkpoint_id:
                break
            time.sleep(0.05)
        assert fresh.checkpoint_id != made[3].checkpoint_id
    finally:
        client.close()
        running.close()


def test_the_retention_lease_has_one_holder_at_a_time(database_url: str) -> None:
    db = Database(database_url)
    migrate.upgrade(db.write_engine)
    db.start()
    try:

        def take(owner: str, now: int) -> bool:
            return db.write_sync(
                lambda ctx: leases.try_acquire(
                    ctx.conn, ctx.dialect, "retention", owner, now, now + 10 * S
                )
            )

        assert take("replica-a", 1_000 * S) is True
        assert take("replica-b", 1_001 * S) is False  # held by a
        assert take("replica-a", 1_005 * S) is True  # the holder renews
        assert take("replica-b", 1_014 * S) is False  # renewed until 1015
        assert take("replica-b", 1_016 * S) is True  # expired: b takes over
        assert take("replica-a", 1_017 * S) is False
        db.write_sync(lambda ctx: leases.release(ctx.conn, "retention", "replica-b"))
        assert take("replica-a", 1_018 * S) is True
    finally:
        db.close()
