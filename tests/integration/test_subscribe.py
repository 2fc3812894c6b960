"""SubscribeEvents: catch-up then live, exactly once and in order, across restarts and replicas."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import namedtuple
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from stateward.server import events_bus
from stateward.server.config import Settings
from stateward.server.events_bus import EventBus
from stateward.server.services import execution as execution_service
from stateward.v1 import execution_pb2 as ex
from stateward.v1 import execution_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc
from tests.support.server import ServerThread

# Reconnect quickly after a restart instead of gRPC's default second-plus backoff.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
]
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


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
        self.raw = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.channel = (
            grpc.intercept_channel(self.raw, InNamespace(namespace)) if namespace else self.raw
        )
        self.ex = execution_pb2_grpc.ExecutionServiceStub(self.channel)
        self.lc = lifecycle_pb2_grpc.LifecycleServiceStub(self.channel)

    def setup(self, agent_id: str, tasks: int = 1) -> tuple[str, list[str]]:
        self.lc.CreateAgent(lifecycle_pb2.CreateAgentRequest(agent_id=agent_id, type="worker"))
        run = self.ex.StartWorkflowRun(
            ex.StartWorkflowRunRequest(workflow_name="wf", agent_id=agent_id)
        ).run
        ids = [
            self.ex.StartTaskRun(
                ex.StartTaskRunRequest(run_id=run.run_id, task_id=f"t{i}", agent_id=agent_id)
            ).task_run.task_run_id
            for i in range(tasks)
        ]
        return run.run_id, ids

    def append(self, run_id: str, *types: str, size: int = 0) -> ex.AppendEventsResponse:
        data = json.dumps({"pad": "x" * size}).encode() if size else b""
        events = [ex.NewEvent(type=t, run_id=run_id, data_json=data) for t in types]
        return self.ex.AppendEvents(ex.AppendEventsRequest(events=events))

    def log(self) -> list[ex.Event]:
        found: list[ex.Event] = []
        token = ""
        while True:
            reply = self.ex.ListEvents(ex.ListEventsRequest(page_size=1000, page_token=token))
            found.extend(reply.events)
            token = reply.next_page_token
            if not token:
                return found

    def subscribe(self, keepalive: float = 0, **fields: Any) -> Any:
        request = ex.SubscribeEventsRequest(**fields)
        if keepalive:
            request.keepalive_interval.CopyFrom(duration_pb2.Duration(seconds=int(keepalive)))
        return self.ex.SubscribeEvents(request, timeout=60)

    def close(self) -> None:
        self.raw.close()


@pytest.fixture
def api(shared_server: ServerThread) -> Iterator[Api]:
    client = Api(shared_server.target, namespace=f"t{uuid.uuid4().hex[:12]}")
    yield client
    client.close()


def take(stream: Any, count: int) -> list[ex.SubscribeEventsResponse]:
    items = []
    for item in stream:
        items.append(item)
        if len(items) == count:
            break
    return items


def take_events(stream: Any, count: int) -> list[ex.Event]:
    """The next ``count`` events, skipping keepalives (a loaded machine may idle long enough)."""
    found: list[ex.Event] = []
    for item in stream:
        if item.HasField("event"):
            found.append(item.event)
            if len(found) == count:
                break
    return found


def bus_of(server: ServerThread) -> EventBus:
    assert server.server is not None and server.server.deps is not None
    bus = server.server.deps.extras["event_bus"]
    assert isinstance(bus, EventBus)
    return bus


def test_catch_up_then_live_with_filters(api: Api) -> None:
    run_id, _ = api.setup("a1")
    other_run, _ = api.setup("a2")
    api.append(run_id, "one", "two")
    api.append(other_run, "noise")
    stream = api.subscribe(filter=ex.EventFilter(run_id=run_id))
    caught_up = take_events(stream, 4)
    assert [e.type for e in caught_up] == ["run.started", "task.started", "one", "two"]
    api.append(other_run, "noise")
    api.append(run_id, "three")
    live = take_events(stream, 1)
    stream.cancel()
    mine = [e for e in api.log() if e.run_id == run_id]
    assert caught_up + live == mine


def test_resume_after_a_sequence_and_from_head(api: Api) -> None:
    run_id, _ = api.setup("a1")
    first = api.append(run_id, "a", "b", "c")
    resumed = api.subscribe(after_sequence=first.first_sequence)
    assert [e.sequence for e in take_events(resumed, 2)] == [
        first.first_sequence + 1,
        first.last_sequence,
    ]
    resumed.cancel()
    live = api.subscribe(from_head=True, keepalive=1)
    time.sleep(0.3)  # let it reach the head before writing
    later = api.append(run_id, "d")
    [item] = take_events(live, 1)
    live.cancel()
    assert item.sequence == later.first_sequence and item.type == "d"


def test_idle_streams_get_keepalives_with_the_head(api: Api) -> None:
    run_id, _ = api.setup("a1")
    head = api.append(run_id, "x").last_sequence
    stream = api.subscribe(after_sequence=head, keepalive=1)
    [item] = take(stream, 1)
    stream.cancel()
    assert item.HasField("keepalive") and item.keepalive.head_sequence == head


def test_a_keepalive_never_claims_an_event_it_has_not_sent(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event committed while an idle stream reads the log's head for its keepalive is
    in the stream's buffer, not yet on the wire. A keepalive naming that head went out
    first, and a from_head client, taking the keepalive as its cursor, dropped the event."""
    run_id, _ = api.setup("a1")
    appended: list[int] = []
    trigger = threading.Event()
    original = execution_service.event_log.head

    def head_after_a_commit(conn: Any, namespace: str) -> int:
        if trigger.is_set() and not appended:  # once: commit an event during the read
            appended.append(api.append(run_id, "during").last_sequence)
        return original(conn, namespace)

    monkeypatch.setattr(execution_service.event_log, "head", head_after_a_commit)
    stream = api.subscribe(from_head=True, keepalive=1)
    items: list[ex.SubscribeEventsResponse] = [take(stream, 1)[0]]  # idle: armed at the head
    assert items[0].HasField("keepalive")
    trigger.set()
    for item in stream:
        items.append(item)
        if item.HasField("event"):
            break
    stream.cancel()
    [sequence] = appended
    assert items[-1].event.sequence == sequence and items[-1].event.type == "during"
    claimed = [i.keepalive.head_sequence for i in items[:-1] if i.HasField("keepalive")]
    assert all(head < sequence for head in claimed), claimed


def test_live_events_are_encoded_once_for_all_subscribers(
    api: Api, shared_server: ServerThread
) -> None:
    bus = bus_of(shared_server)
    run_id, _ = api.setup("a1")
    head = api.append(run_id, "x").last_sequence
    streams = [api.subscribe(after_sequence=head, keepalive=1) for _ in range(3)]
    for stream in streams:
        take(stream, 1)  # a keepalive: caught up and armed, so what follows is live
    encoded: list[int] = []
    original = bus.encode

    def counting(event: Any) -> Any:
        encoded.append(event.sequence)
        return original(event)

    bus.encode = counting
    try:
        appended = api.append(run_id, "a", "b")
        received = [take_events(stream, 2) for stream in streams]
    finally:
        bus.encode = original
        for stream in streams:
            stream.cancel()
    mine = [e for e in api.log() if e.sequence > head]
    assert all(events == mine for events in received)  # the bytes sent are the event
    assert encoded == [appended.first_sequence, appended.last_sequence]


def test_subscribe_refuses_bad_requests(api: Api) -> None:
    cases = [
        ({"after_sequence": 5, "from_head": True}, "from_head"),
        ({"after_sequence": -1}, "after_sequence"),
        ({"filter": ex.EventFilter(task_run_id="a/b")}, "filter.task_run_id"),
    ]
    for fields, field in cases:
        with pytest.raises(grpc.RpcError) as caught:
            take(api.subscribe(**fields), 1)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (caught.value.details() or "")
    request = ex.SubscribeEventsRequest(keepalive_interval=duration_pb2.Duration(nanos=500_000_000))
    with pytest.raises(grpc.RpcError) as caught:
        take(api.ex.SubscribeEvents(request, timeout=10), 1)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "keepalive_interval" in (caught.value.details() or "")


def test_subscriber_limit_is_resource_exhausted(settings: Settings) -> None:
    running = ServerThread(replace(settings, max_subscribers=2)).start()
    api = Api(running.target)
    try:
        api.setup("a1")
        streams = [api.subscribe() for _ in range(2)]
        for stream in streams:
            assert take(stream, 1)  # registered and delivering
        with pytest.raises(grpc.RpcError) as caught:
            take(api.subscribe(), 1)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_subscribers=2" in (caught.value.details() or "")
        streams[0].cancel()
        deadline = time.monotonic() + 10
        while bus_of(running).count > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert take(api.subscribe(), 1)  # the freed slot is usable again
        streams[1].cancel()
    finally:
        api.close()
        running.close()


def test_slow_subscriber_falls_back_to_the_log_and_misses_nothing(settings: Settings) -> None:
    running = ServerThread(replace(settings, subscriber_buffer=8)).start()
    api = Api(running.target)
    try:
        run_id, _ = api.setup("a1")
        slow = api.subscribe(filter=ex.EventFilter(run_id=run_id))
        fast = api.subscribe(filter=ex.EventFilter(run_id=run_id))
        first_slow = take_events(slow, 1)
        fast_events: list[ex.Event] = []
        total = 2 + 40 * 50  # run.started, task.started, then the appended events
        reader = threading.Thread(target=lambda: fast_events.extend(take_events(fast, total)))
        reader.start()
        for _ in range(40):  # ~4 MB the slow reader does not read meanwhile
            api.append(run_id, *["bulk"] * 50, size=2000)
        reader.join(60)
        log = [e for e in api.log() if e.run_id == run_id]
        assert fast_events == log
        assert first_slow + take_events(slow, total - 1) == log
        assert bus_of(running).overflows >= 1  # the slow one did overflow
        slow.cancel()
        fast.cancel()
    finally:
        api.close()
        running.close()


def test_shutdown_ends_streams_cleanly(server: ServerThread) -> None:
    api = Api(server.target)
    api.setup("a1")
    stream = api.subscribe(keepalive=1)
    assert take(stream, 1)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    rest = list(stream)  # ends without an error: clients resume elsewhere
    stopper.join(30)
    assert stream.code() == grpc.StatusCode.OK
    assert all(item.HasField("event") or item.HasField("keepalive") for item in rest)
    api.close()


def _two_replicas(settings: Settings) -> tuple[ServerThread, ServerThread]:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database")
    first = ServerThread(settings).start()
    return first, ServerThread(replace(settings, listen="127.0.0.1:0")).start()


def _reaches_other_replica(first: ServerThread, second: ServerThread, within: float) -> bool:
    writer, reader = Api(first.target), Api(second.target)
    try:
        run_id, _ = writer.setup("a1")
        stream = reader.subscribe(from_head=True)  # keepalives every 15 s: no help from them
        time.sleep(0.3)
        sent = writer.append(run_id, "ping").first_sequence
        got: list[ex.Event] = []
        thread = threading.Thread(target=lambda: got.extend(take_events(stream, 1)), daemon=True)
        thread.start()
        thread.join(within)
        stream.cancel()
        return [e.sequence for e in got] == [sent]
    finally:
        writer.close()
        reader.close()


def test_listen_notify_carries_events_to_another_replica(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_bus, "POLL_INTERVAL", 3600.0)  # NOTIFY is the only fast path
    first, second = _two_replicas(settings)
    try:
        assert _reaches_other_replica(first, second, within=10)
    finally:
        second.close()
        first.close()


def test_polling_covers_lost_notifications(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_bus, "POLL_INTERVAL", 0.2)
    first, second = _two_replicas(settings)
    try:
        notifier = bus_of(second).notifier
        assert notifier is not None
        notifier.on_head = lambda namespace, head: None  # every notification is lost
        assert _reaches_other_replica(first, second, within=10)
    finally:
        second.close()
        first.close()


# -- the ordering test from the issue ----------------------------------------------------------
WRITERS = 8
PER_WRITER = 500
SUBSCRIBERS = 5


class Shared:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.head = 0
        self.done = threading.Event()
        self.final_head = 0
        self.errors: list[BaseException] = []


def _writer(target: str, index: int, task_run_id: str, shared: Shared) -> None:
    api = Api(target)
    rng = random.Random(index)
    sent = batch = 0
    try:
        while sent < PER_WRITER:
            size = min(rng.randint(1, 25), PER_WRITER - sent)
            events = [
                ex.NewEvent(
                    type=f"w{index}",
                    task_run_id=task_run_id,
                    data_json=json.dumps({"w": index, "n": sent + k}).encode(),
                )
                for k in range(size)
            ]
            request = ex.AppendEventsRequest(events=events, request_id=f"w{index}-b{batch}")
            while True:  # a retry with the same request_id never appends twice
                try:
                    reply = api.ex.AppendEvents(request, timeout=10)
                    break
                except grpc.RpcError as error:
                    if error.code() not in RETRYABLE:
                        raise
                    time.sleep(0.05)
            with shared.lock:
                shared.head = max(shared.head, reply.last_sequence)
            sent += size
            batch += 1
    except BaseException as error:
        shared.errors.append(error)
    finally:
        api.close()


def _subscriber(targets: list[str], index: int, shared: Shared, out: dict[int, Any]) -> None:
    rng = random.Random(1000 + index)
    apis = [Api(t) for t in targets]
    time.sleep(rng.uniform(0, 0.5))
    with shared.lock:
        start = rng.randint(0, shared.head)
    received: list[ex.Event] = []
    last = start
    reconnects = 0
    try:
        while not (shared.done.is_set() and last >= shared.final_head):
            api = rng.choice(apis)
            limit = rng.randint(1, 400)  # disconnect after a random number of events
            stream = api.subscribe(after_sequence=last, keepalive=1)
            reconnects += 1
            count = 0
            try:
                for item in stream:
                    if item.HasField("event"):
                        received.append(item.event)
                        last = item.event.sequence
                        count += 1
                    if count >= limit or (shared.done.is_set() and last >= shared.final_head):
                        break
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE:
                    raise
                time.sleep(0.05)
            finally:
                stream.cancel()
        out[index] = (start, received, reconnects)
    except BaseException as error:
        shared.errors.append(error)
    finally:
        for api in apis:
            api.close()


@pytest.mark.slow
def test_concurrent_writers_and_resuming_subscribers_see_the_exact_log(settings: Settings) -> None:
    """8 writers x 500 events; 5 subscribers join at random sequences and are cut off at random;
    the server restarts midway. On PostgreSQL two replicas share the database: writers and
    subscribers are spread over both, and one of them restarts."""
    postgres = settings.database_url.startswith("postgresql")
    replicas = [ServerThread(settings).start()]
    if postgres:
        replicas.append(ServerThread(replace(settings, listen="127.0.0.1:0")).start())
    targets = [r.target for r in replicas]
    setup = Api(targets[0])
    shared = Shared()
    out: dict[int, Any] = {}
    try:
        _, task_ids = setup.setup("writer", tasks=WRITERS)
        writers = [
            threading.Thread(
                target=_writer, args=(targets[i % len(targets)], i, task_ids[i], shared)
            )
            for i in range(WRITERS)
        ]
        subscribers = [
            threading.Thread(target=_subscriber, args=(targets, j, shared, out))
            for j in range(SUBSCRIBERS)
        ]
        for thread in writers + subscribers:
            thread.start()
        deadline = time.monotonic() + 60
        while (
            shared.head < WRITERS * PER_WRITER // 3
            and time.monotonic() < deadline
            and not shared.errors
        ):
            time.sleep(0.01)
        replicas[0].restart()
        for thread in writers:
            thread.join(120)
        assert not shared.errors, shared.errors
        log = setup.log()
        shared.final_head = log[-1].sequence
        shared.done.set()
        for thread in subscribers:
            thread.join(120)
        assert not shared.errors, shared.errors
        assert not any(t.is_alive() for t in writers + subscribers)
    finally:
        shared.done.set()
        setup.close()
        for replica in replicas:
            replica.close()

    assert [e.sequence for e in log] == list(range(1, len(log) + 1))  # gap-free
    for index in range(WRITERS):
        mine = [json.loads(e.data_json)["n"] for e in log if e.type == f"w{index}"]
        assert mine == list(range(PER_WRITER))  # each event once, in the writer's order
    assert sorted(out) == list(range(SUBSCRIBERS))
    for start, received, reconnects in out.values():
        expected = log[start:]
        assert [e.sequence for e in received] == [e.sequence for e in expected]
        assert received == expected
        assert reconnects > 1
