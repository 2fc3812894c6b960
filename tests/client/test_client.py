"""What the clients send and what they give back, over loopback to the fake server."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from stateward.client import (
    UNSET,
    AsyncClient,
    Client,
    ClientOptions,
    InvalidArgument,
    NewEvent,
    PermissionDenied,
    TLSConfig,
    UsageError,
)
from stateward.v1 import execution_pb2, lifecycle_pb2, state_pb2
from tests.client.conftest import FAST_RETRY
from tests.client.fakes import FakeServer, agent_pb, refuse


def answer_agent(response_type: Any) -> Callable[[Any], Any]:
    return lambda request: response_type(agent=agent_pb(request.agent_id))


def test_namespace_and_metadata(fake: FakeServer) -> None:
    fake.handlers["GetAgent"] = answer_agent(lifecycle_pb2.GetAgentResponse)
    with Client.connect(
        fake.target, namespace="team-a", metadata=[("authorization", "Bearer t"), ("x-a", "1")]
    ) as client:
        client.get_agent("a1", metadata={"x-a": "2", "x-b": "3"})
    metadata = fake.calls[0].metadata
    assert metadata["x-stateward-namespace"] == "team-a"
    assert metadata["authorization"] == "Bearer t"
    assert (metadata["x-a"], metadata["x-b"]) == ("2", "3")  # the call's metadata wins
    assert len(metadata["x-request-id"]) == 32


def test_default_namespace(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["GetAgent"] = answer_agent(lifecycle_pb2.GetAgentResponse)
    call("get_agent", "a1")
    assert fake.calls[0].metadata["x-stateward-namespace"] == "default"


def test_create_agent_request(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["CreateAgent"] = answer_agent(lifecycle_pb2.CreateAgentResponse)
    agent = call(
        "create_agent", "a1", "planner", {"model": "m", "n": 2**64, "name": "é"}, {"k": "v"}
    )

    (request,) = fake.requests("CreateAgent")
    assert request.config_json == '{"model":"m","n":18446744073709551616,"name":"é"}'.encode()
    assert dict(request.labels) == {"k": "v"}
    assert (request.agent_id, request.type) == ("a1", "planner")
    assert len(request.request_id) == 32
    assert agent.agent_id == "a1"


def test_update_agent_sends_only_what_was_given(fake: FakeServer, client: Client) -> None:
    fake.handlers["UpdateAgent"] = answer_agent(lifecycle_pb2.UpdateAgentResponse)
    client.update_agent("a1", labels={})
    client.update_agent("a1", config={"x": 1}, etag="e3")
    client.update_agent("a1", config=UNSET, labels=UNSET)

    labels_only, config_only, nothing = fake.requests("UpdateAgent")
    assert labels_only.update_labels and not labels_only.update_config
    assert config_only.update_config and not config_only.update_labels
    assert config_only.config_json == b'{"x":1}' and config_only.etag == "e3"
    assert not nothing.update_config and not nothing.update_labels


def test_list_agents_filters(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["ListAgents"] = lambda request: lifecycle_pb2.ListAgentsResponse()
    page = call("list_agents", status="paused", type="planner", labels={"t": "x"}, page_size=5)
    (request,) = fake.requests("ListAgents")
    assert request.status == lifecycle_pb2.AGENT_STATUS_PAUSED
    assert (request.type, dict(request.labels), request.page_size) == ("planner", {"t": "x"}, 5)
    assert page.items == [] and page.next_page_token == ""


def paged_agents(request: Any) -> Any:
    """Five agents, two per page; the token is the index to continue from."""
    start = int(request.page_token or 0)
    ids = [f"a{i}" for i in range(start, min(start + 2, 5))]
    token = str(start + 2) if start + 2 < 5 else ""
    return lifecycle_pb2.ListAgentsResponse(
        agents=[agent_pb(i) for i in ids], next_page_token=token
    )


def test_iter_agents_follows_pages(fake: FakeServer, client: Client) -> None:
    fake.handlers["ListAgents"] = paged_agents
    agents = client.iter_agents(status="ACTIVE")
    assert fake.calls == []  # lazy: nothing sent before iterating
    assert [a.agent_id for a in agents] == ["a0", "a1", "a2", "a3", "a4"]
    requests = fake.requests("ListAgents")
    assert [r.page_token for r in requests] == ["", "2", "4"]
    assert all(r.status == lifecycle_pb2.AGENT_STATUS_ACTIVE for r in requests)


async def test_async_iter_agents_follows_pages(fake: FakeServer) -> None:
    fake.handlers["ListAgents"] = paged_agents
    async with AsyncClient.connect(fake.target, retry=FAST_RETRY) as client:
        ids = [a.agent_id async for a in client.iter_agents()]
    assert ids == ["a0", "a1", "a2", "a3", "a4"]


def subscription(request: Any) -> list[Any]:
    keepalive = execution_pb2.SubscribeEventsResponse(
        keepalive=execution_pb2.Keepalive(head_sequence=9)
    )
    events = [
        execution_pb2.SubscribeEventsResponse(
            event=execution_pb2.Event(sequence=n, type="step", data_json=b'{"n":%d}' % n)
        )
        for n in (request.after_sequence + 1, request.after_sequence + 2)
    ]
    return [keepalive, events[0], keepalive, events[1]]


def test_subscribe_events_skips_keepalives(fake: FakeServer, client: Client) -> None:
    fake.handlers["SubscribeEvents"] = subscription
    events = list(client.subscribe_events(agent_id="a1", types=["step"], after_sequence=4))
    assert [(e.sequence, e.data) for e in events] == [(5, {"n": 5}), (6, {"n": 6})]
    (request,) = fake.requests("SubscribeEvents")
    assert request.filter.agent_id == "a1" and list(request.filter.types) == ["step"]


async def test_async_subscribe_events(fake: FakeServer) -> None:
    fake.handlers["SubscribeEvents"] = subscription
    async with AsyncClient.connect(fake.target) as client:
        sequences = [e.sequence async for e in client.subscribe_events()]
    assert sequences == [1, 2]


def test_save_state_compare_and_set(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["SaveState"] = lambda request: state_pb2.SaveStateResponse(
        state=state_pb2.StateVersion(agent_id=request.agent_id, version=1)
    )
    call("save_state", "a1", {"step": 1})
    call("save_state", "a1", {"step": 1}, expected_version=0, schema_version=2)
    unguarded, guarded = fake.requests("SaveState")
    assert not unguarded.HasField("expected_version")
    assert guarded.HasField("expected_version") and guarded.expected_version == 0
    assert guarded.schema_version == 2 and guarded.document_json == b'{"step":1}'


def test_get_state_selectors(fake: FakeServer, client: Client) -> None:
    fake.handlers["GetState"] = lambda request: state_pb2.GetStateResponse(
        state=state_pb2.StateVersion(agent_id="a1", version=3, document_json=b"{}")
    )
    client.get_state("a1")
    client.get_state("a1", version=3)
    client.get_state("a1", as_of=datetime(2026, 1, 1, tzinfo=UTC))
    latest, exact, as_of = fake.requests("GetState")
    assert latest.WhichOneof("selector") is None
    assert exact.WhichOneof("selector") == "version"
    assert as_of.as_of.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 1, tzinfo=UTC)

    with pytest.raises(UsageError, match="not both"):
        client.get_state("a1", version=1, as_of=datetime.now(UTC))
    assert len(fake.calls) == 3  # nothing sent


def test_workflow_and_events(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["StartTaskRun"] = lambda request: execution_pb2.StartTaskRunResponse(
        task_run=execution_pb2.TaskRun(task_run_id="t1", status=execution_pb2.TASK_STATUS_RUNNING)
    )
    fake.handlers["AppendEvents"] = lambda request: execution_pb2.AppendEventsResponse(
        first_sequence=10, last_sequence=11
    )
    fake.handlers["FailWorkflowRun"] = lambda request: execution_pb2.FailWorkflowRunResponse(
        run=execution_pb2.WorkflowRun(
            run_id=request.run_id, status=execution_pb2.RUN_STATUS_FAILED, error=request.error
        )
    )

    call("start_task_run", "r1", "fetch", "a1", input={"q": 1}, task_timeout=30)
    appended = call("append_events", [NewEvent("step_started", {"i": 1}, run_id="r1")] * 2)
    run = call("fail_workflow_run", "r1", "boom", kind="dependency", retryable=True)

    (start,) = fake.requests("StartTaskRun")
    assert start.timeout.seconds == 30 and start.input_json == b'{"q":1}'
    assert (appended.first_sequence, appended.last_sequence) == (10, 11)
    assert run.error is not None and (run.error.kind, run.error.retryable) == ("DEPENDENCY", True)


def test_unwrapped_calls_through_the_raw_stubs(fake: FakeServer, client: Client) -> None:
    fake.handlers["MigrateStates"] = lambda request: state_pb2.MigrateStatesResponse(migrated=4)
    response = client.stubs.state.MigrateStates(state_pb2.MigrateStatesRequest(agent_type="p"))
    assert response.migrated == 4


def test_closed_client_refuses_calls(fake: FakeServer) -> None:
    client = Client.connect(fake.target)
    client.close()
    client.close()  # twice is fine
    with pytest.raises(UsageError, match="closed"):
        client.get_agent("a1")
    assert "closed" in repr(client)


async def test_closed_async_client_refuses_calls(fake: FakeServer) -> None:
    async with AsyncClient.connect(fake.target) as client:
        pass
    with pytest.raises(UsageError, match="closed"):
        await client.get_agent("a1")


def test_methods_show_their_signature_and_docs(fake: FakeServer, client: Client) -> None:
    params = inspect.signature(client.pause_agent).parameters
    assert list(params) == ["agent_id", "reason", "request_id", "timeout", "metadata"]
    assert params["timeout"].kind is inspect.Parameter.KEYWORD_ONLY
    assert client.pause_agent.__doc__ == "ACTIVE -> PAUSED."
    assert client.iter_agents.__name__ == "iter_agents"
    assert "fetching pages" in (Client.iter_agents.__doc__ or "")


def test_sync_and_async_offer_the_same_methods() -> None:
    def public(cls: type) -> set[str]:
        return {name for name in dir(cls) if not name.startswith("_")}

    assert public(Client) ^ public(AsyncClient) == set()


async def test_async_calls_run_concurrently(fake: FakeServer) -> None:
    async def slow(request: Any) -> Any:
        await asyncio.sleep(0.2)
        return lifecycle_pb2.GetAgentResponse(agent=agent_pb(request.agent_id))

    fake.handlers["GetAgent"] = slow
    async with AsyncClient.connect(fake.target) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        agents = await asyncio.gather(*(client.get_agent(f"a{i}") for i in range(5)))
        assert loop.time() - started < 0.9
    assert [a.agent_id for a in agents] == [f"a{i}" for i in range(5)]


def test_stream_errors_are_translated(fake: FakeServer, client: Client) -> None:
    def refuse_subscription(request: Any) -> Any:
        raise refuse(grpc.StatusCode.INVALID_ARGUMENT, "bad filter")

    fake.handlers["SubscribeEvents"] = refuse_subscription
    with pytest.raises(InvalidArgument, match="bad filter"):
        list(client.subscribe_events(types=["?"]))


async def test_async_stream_errors_are_translated(fake: FakeServer) -> None:
    def refuse_subscription(request: Any) -> Any:
        raise refuse(grpc.StatusCode.PERMISSION_DENIED, "not your namespace")

    fake.handlers["SubscribeEvents"] = refuse_subscription
    async with AsyncClient.connect(fake.target) as client:
        with pytest.raises(PermissionDenied, match="not your namespace"):
            async for _ in client.subscribe_events():
                pass


def test_tls_config_names_unreadable_files(tmp_path: Any) -> None:
    with pytest.raises(UsageError, match="cannot read the TLS CA file"):
        TLSConfig(tmp_path / "missing.pem").credentials()
    with pytest.raises(UsageError, match="both cert_file and key_file"):
        TLSConfig(cert_file=tmp_path / "c.pem").credentials()
    with pytest.raises(UsageError):
        Client.connect("127.0.0.1:1", tls=TLSConfig(tmp_path / "missing.pem"))


def test_channel_options() -> None:
    options = ClientOptions(
        tls=TLSConfig(server_name="stateward.internal"),
        channel_options=[("grpc.max_receive_message_length", 1024)],
    )
    merged = dict(options.grpc_channel_options())
    assert merged["grpc.max_receive_message_length"] == 1024  # the caller's value wins
    assert merged["grpc.ssl_target_name_override"] == "stateward.internal"
