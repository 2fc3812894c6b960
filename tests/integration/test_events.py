"""AppendEvents and ListEvents: atomic batches, validation, filters, paging; both databases."""

from __future__ import annotations

import json
import time
import uuid
from collections import namedtuple
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from stateward.server.config import Settings
from stateward.v1 import execution_pb2 as ex
from stateward.v1 import execution_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc
from tests.support.server import ServerThread

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
    def __init__(self, target: str, namespace: str = "") -> None:
        self.raw = grpc.insecure_channel(target)
        self.channel = (
            grpc.intercept_channel(self.raw, InNamespace(namespace)) if namespace else self.raw
        )
        self.ex = execution_pb2_grpc.ExecutionServiceStub(self.channel)
        self.lc = lifecycle_pb2_grpc.LifecycleServiceStub(self.channel)

    def setup(self, agent_id: str) -> tuple[str, str]:
        """An agent with a run and a task run; returns (run_id, task_run_id)."""
        self.lc.CreateAgent(lifecycle_pb2.CreateAgentRequest(agent_id=agent_id, type="worker"))
        run = self.ex.StartWorkflowRun(
            ex.StartWorkflowRunRequest(workflow_name="wf", agent_id=agent_id)
        ).run
        task = self.ex.StartTaskRun(
            ex.StartTaskRunRequest(run_id=run.run_id, task_id="t", agent_id=agent_id)
        ).task_run
        return run.run_id, task.task_run_id

    def append(self, *events: ex.NewEvent, request_id: str = "") -> ex.AppendEventsResponse:
        return self.ex.AppendEvents(ex.AppendEventsRequest(events=events, request_id=request_id))

    def listing(self, page_size: int = 1000, **fields: Any) -> list[ex.Event]:
        found: list[ex.Event] = []
        token = ""
        while True:
            reply = self.ex.ListEvents(
                ex.ListEventsRequest(page_size=page_size, page_token=token, **fields)
            )
            assert len(reply.events) <= page_size
            found.extend(reply.events)
            token = reply.next_page_token
            if not token:
                return found


@pytest.fixture
def api(shared_server: ServerThread) -> Iterator[Api]:
    client = Api(shared_server.target, namespace=f"t{uuid.uuid4().hex[:12]}")
    yield client
    client.raw.close()


def refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    raise AssertionError("no BadRequest detail")


def test_append_assigns_consecutive_sequences_and_fills_owners(api: Api) -> None:
    run_id, task_run_id = api.setup("a1")
    stamp = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_456_000)
    reply = api.append(
        ex.NewEvent(
            type="step_started",
            data_json=b'{"big": 123456789012345678901234567890}',
            task_run_id=task_run_id,
            client_time=stamp,
        ),
        ex.NewEvent(type="tool.call", run_id=run_id),
        ex.NewEvent(
            type="note", run_id=run_id, task_run_id=task_run_id, data_json=b' {"a": [1, {}]} '
        ),
    )
    assert reply.last_sequence == reply.first_sequence + 2
    events = api.listing(after_sequence=reply.first_sequence - 1)
    assert [e.sequence for e in events] == [
        reply.first_sequence,
        reply.first_sequence + 1,
        reply.last_sequence,
    ]
    first, second, third = events
    assert (first.type, first.agent_id, first.run_id, first.task_run_id) == (
        "step_started",
        "a1",
        run_id,
        task_run_id,
    )
    assert first.data_json == b'{"big": 123456789012345678901234567890}'  # byte-exact
    assert first.client_time == stamp and first.HasField("create_time")
    assert (second.agent_id, second.run_id, second.task_run_id) == ("a1", run_id, "")
    assert second.data_json == b"{}" and not second.HasField("client_time")
    assert third.data_json == b' {"a": [1, {}]} '


def test_one_bad_event_fails_the_whole_batch(api: Api) -> None:
    run_id, task_run_id = api.setup("a1")
    _, other_task = api.setup("a2")
    before = api.listing()
    good = ex.NewEvent(type="ok", task_run_id=task_run_id)
    # Refused in the write itself, after the first events took their sequences.
    mismatch = ex.NewEvent(type="ok", run_id=run_id, task_run_id=other_task)
    error = refused(lambda: api.append(good, good, mismatch, good))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[2].run_id" in violations(error)
    error = refused(lambda: api.append(good, ex.NewEvent(type="ok", task_run_id="task-ghost")))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "task-ghost" in (error.details() or "")
    error = refused(lambda: api.append(good, ex.NewEvent(type="ok", run_id="run-ghost")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert api.listing() == before
    # The sequences the failed batch took were given back: the next one follows on.
    reply = api.append(good)
    assert reply.first_sequence == before[-1].sequence + 1


BAD_EVENTS = [
    (ex.NewEvent(type="run.started", run_id="r"), "events[1].type", "system prefix"),
    (ex.NewEvent(type="9lives", run_id="r"), "events[1].type", "starting with a letter"),
    (ex.NewEvent(type="x", run_id="r", data_json=b"[1]"), "events[1].data_json", "JSON object"),
    (ex.NewEvent(type="x", run_id="r", data_json=b"{bad"), "events[1].data_json", "valid JSON"),
    (
        ex.NewEvent(type="x", run_id="r", data_json=b'{"n": NaN}'),
        "events[1].data_json",
        "valid JSON",
    ),
    (ex.NewEvent(type="x", run_id="r", data_json=b'{"s": "\xff"}'), "events[1].data_json", "UTF-8"),
    (
        ex.NewEvent(type="x", run_id="r", data_json=b"[" * 70 + b"]" * 70),
        "events[1].data_json",
        "object",
    ),
    (
        ex.NewEvent(type="x", run_id="r", data_json=b'{"a":' * 70 + b"1" + b"}" * 70),
        "events[1].data_json",
        "nested",
    ),
    (
        ex.NewEvent(type="x", run_id="r", data_json=b'{"s": "' + b"x" * 65536 + b'"}'),
        "events[1].data_json",
        "at most 65536 bytes",
    ),
    (ex.NewEvent(type="x"), "events[1]", "run_id or task_run_id"),
    (ex.NewEvent(type="x", run_id="../etc"), "events[].run_id", "letters, digits"),
]


def test_append_validates_every_event(api: Api) -> None:
    for event, field, hint in BAD_EVENTS:
        error = refused(lambda event=event: api.append(ex.NewEvent(type="fine", run_id="r"), event))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        found = violations(error)
        assert field in found, (event, found)
        assert hint in found[field], (event, found)


def test_append_batch_size_limits(api: Api) -> None:
    run_id, _ = api.setup("a1")
    error = refused(lambda: api.append())
    assert "events" in violations(error)
    error = refused(lambda: api.append(*[ex.NewEvent(type="x", run_id=run_id)] * 1001))
    assert "at most 1000" in violations(error)["events"]
    reply = api.append(*[ex.NewEvent(type="x", run_id=run_id, data_json=b'{"i": 1}')] * 1000)
    assert reply.last_sequence - reply.first_sequence == 999


def test_append_is_idempotent_by_request_id(api: Api) -> None:
    run_id, _ = api.setup("a1")
    batch = [ex.NewEvent(type="x", run_id=run_id, data_json=b'{"i": %d}' % i) for i in range(3)]
    first = api.append(*batch, request_id="batch-1")
    again = api.append(*batch, request_id="batch-1")
    assert again == first
    assert len(api.listing(filter=ex.EventFilter(types=["x"]))) == 3
    error = refused(lambda: api.append(batch[0], request_id="batch-1"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_every_change_is_one_event_in_one_log(api: Api) -> None:
    run_id, task_run_id = api.setup("a1")
    api.lc.InitializeAgent(lifecycle_pb2.InitializeAgentRequest(agent_id="a1"))
    api.append(ex.NewEvent(type="x", task_run_id=task_run_id))
    events = api.listing()
    assert [e.type for e in events] == [
        "agent.created",
        "run.started",
        "task.started",
        "agent.transitioned",
        "x",
    ]
    assert [e.sequence for e in events] == list(range(1, 6))
    for event in events:
        assert isinstance(json.loads(event.data_json), dict)


def test_list_events_filters_combine_and_page(api: Api) -> None:
    run1, task1 = api.setup("a1")
    run2, task2 = api.setup("a2")
    for i in range(6):
        api.append(
            ex.NewEvent(
                type="even" if i % 2 == 0 else "odd", task_run_id=task1, data_json=b'{"i": %d}' % i
            ),
            ex.NewEvent(type="other", task_run_id=task2),
        )
    everything = api.listing()
    assert [e.sequence for e in everything] == list(range(1, len(everything) + 1))

    def seqs(**fields: Any) -> list[int]:
        return [e.sequence for e in api.listing(page_size=2, **fields)]

    def expected(keep: Any) -> list[int]:
        return [e.sequence for e in everything if keep(e)]

    assert seqs(filter=ex.EventFilter(agent_id="a2")) == expected(lambda e: e.agent_id == "a2")
    assert seqs(filter=ex.EventFilter(run_id=run1)) == expected(lambda e: e.run_id == run1)
    assert seqs(filter=ex.EventFilter(task_run_id=task1, types=["even"])) == expected(
        lambda e: e.task_run_id == task1 and e.type == "even"
    )
    assert seqs(filter=ex.EventFilter(types=["odd", "task.started"])) == expected(
        lambda e: e.type in ("odd", "task.started")
    )
    middle = everything[len(everything) // 2].sequence
    assert seqs(after_sequence=middle) == expected(lambda e: e.sequence > middle)
    assert seqs(filter=ex.EventFilter(run_id=run2), after_sequence=middle) == expected(
        lambda e: e.run_id == run2 and e.sequence > middle
    )
    start, end = everything[3].create_time, everything[-1].create_time
    window = seqs(start_time=start, end_time=end)
    assert window == expected(
        lambda e: (
            e.create_time.ToNanoseconds() >= start.ToNanoseconds()
            and e.create_time.ToNanoseconds() < end.ToNanoseconds()
        )
    )
    assert window and window[0] <= everything[3].sequence


def test_list_events_refuses_bad_filters_and_foreign_tokens(api: Api) -> None:
    run_id, _ = api.setup("a1")
    page = api.ex.ListEvents(ex.ListEventsRequest(page_size=1))
    error = refused(
        lambda: api.ex.ListEvents(
            ex.ListEventsRequest(
                page_size=1, page_token=page.next_page_token, filter=ex.EventFilter(run_id=run_id)
            )
        )
    )
    assert "page_token" in violations(error)
    error = refused(
        lambda: api.ex.ListEvents(
            ex.ListEventsRequest(
                after_sequence=-1,
                page_size=5000,
                filter=ex.EventFilter(agent_id="a b", types=["bad type"]),
            )
        )
    )
    assert set(violations(error)) == {
        "after_sequence",
        "page_size",
        "filter.agent_id",
        "filter.types",
    }
    error = refused(
        lambda: api.ex.ListEvents(
            ex.ListEventsRequest(filter=ex.EventFilter(types=[f"t{i}" for i in range(65)]))
        )
    )
    assert "filter.types" in violations(error)


def test_append_throughput_smoke(api: Api) -> None:
    """Not a benchmark (see bench/): a hundred batches of 100 go through quickly and in order."""
    _, task_run_id = api.setup("a1")
    batch = [ex.NewEvent(type="tick", task_run_id=task_run_id, data_json=b'{"n": 1}')] * 100
    started = time.monotonic()
    futures = [api.ex.AppendEvents.future(ex.AppendEventsRequest(events=batch)) for _ in range(100)]
    spans = sorted((f.result().first_sequence, f.result().last_sequence) for f in futures)
    elapsed = time.monotonic() - started
    for (_, last), (first, _) in zip(spans, spans[1:], strict=False):
        assert first == last + 1
    assert len(api.listing(filter=ex.EventFilter(types=["tick"]))) == 10_000
    print(f"10k events in {elapsed:.2f} s")
