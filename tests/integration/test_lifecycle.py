"""LifecycleService over a real server on SQLite and PostgreSQL, through the raw stubs.

Every RPC, its happy path and every error path, with the google.rpc details a
client relies on (BadRequest, ErrorInfo, PreconditionFailure).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from stateward.v1 import common_pb2, lifecycle_pb2_grpc
from stateward.v1 import lifecycle_pb2 as pb
from tests.support.server import ServerThread

Stub = lifecycle_pb2_grpc.LifecycleServiceStub
NS_KEY = "x-stateward-namespace"

HOSTILE_IDS = [
    "..",
    "a/b",
    "%2e%2e",
    "/etc/passwd",
    "a\x00b",
    "a" * 129,
    "agént",
    "a'; DROP TABLE agents;--",
    " a",
]

S = pb.AgentStatus
CREATED, INITIALIZED, ACTIVE, PAUSED, TERMINATED, ERROR = (
    S.Value("AGENT_STATUS_CREATED"),
    S.Value("AGENT_STATUS_INITIALIZED"),
    S.Value("AGENT_STATUS_ACTIVE"),
    S.Value("AGENT_STATUS_PAUSED"),
    S.Value("AGENT_STATUS_TERMINATED"),
    S.Value("AGENT_STATUS_ERROR"),
)


def name(status: int) -> str:
    return S.Name(status).removeprefix("AGENT_STATUS_")


# Transition RPCs by the action's name: (method, request type).
ACTIONS: dict[str, tuple[str, type[Message]]] = {
    "initialize": ("InitializeAgent", pb.InitializeAgentRequest),
    "activate": ("ActivateAgent", pb.ActivateAgentRequest),
    "pause": ("PauseAgent", pb.PauseAgentRequest),
    "resume": ("ResumeAgent", pb.ResumeAgentRequest),
    "terminate": ("TerminateAgent", pb.TerminateAgentRequest),
    "report_error": ("ReportAgentError", pb.ReportAgentErrorRequest),
    "reset": ("ResetAgent", pb.ResetAgentRequest),
}
ALLOWED = {
    CREATED: {INITIALIZED, TERMINATED, ERROR},
    INITIALIZED: {ACTIVE, TERMINATED, ERROR},
    ACTIVE: {PAUSED, TERMINATED, ERROR},
    PAUSED: {ACTIVE, TERMINATED, ERROR},
    ERROR: {INITIALIZED, TERMINATED},
    TERMINATED: set(),
}
MOVES = {  # (action, from) -> to
    ("initialize", CREATED): INITIALIZED,
    ("activate", INITIALIZED): ACTIVE,
    ("pause", ACTIVE): PAUSED,
    ("resume", PAUSED): ACTIVE,
    **{("terminate", s): TERMINATED for s in (CREATED, INITIALIZED, ACTIVE, PAUSED, ERROR)},
    **{("report_error", s): ERROR for s in (CREATED, INITIALIZED, ACTIVE, PAUSED)},
    ("reset", ERROR): INITIALIZED,
}
# How to bring a fresh agent into each status.
PATH_TO = {
    CREATED: [],
    INITIALIZED: ["initialize"],
    ACTIVE: ["initialize", "activate"],
    PAUSED: ["initialize", "activate", "pause"],
    ERROR: ["report_error"],
    TERMINATED: ["terminate"],
}


@pytest.fixture
def stub(server: ServerThread) -> Iterator[Stub]:
    with grpc.insecure_channel(server.target) as channel:
        yield Stub(channel)


def act(stub: Stub, action: str, agent_id: str, *, ns: str | None = None, **fields: Any) -> Any:
    method, request_type = ACTIONS[action]
    if action == "report_error":
        fields.setdefault("message", "it broke")
    metadata = [(NS_KEY, ns)] if ns else None
    return getattr(stub, method)(
        request_type(agent_id=agent_id, **fields), metadata=metadata, timeout=10
    )


def create(stub: Stub, agent_id: str, *, ns: str | None = None, **fields: Any) -> pb.Agent:
    fields.setdefault("type", "worker")
    metadata = [(NS_KEY, ns)] if ns else None
    request = pb.CreateAgentRequest(agent_id=agent_id, **fields)
    return stub.CreateAgent(request, metadata=metadata, timeout=10).agent


def agent_in(stub: Stub, agent_id: str, status: int, **fields: Any) -> pb.Agent:
    agent = create(stub, agent_id, **fields)
    for action in PATH_TO[status]:
        agent = act(stub, action, agent_id).agent
    assert agent.status == status
    return agent


def get(stub: Stub, agent_id: str, *, ns: str | None = None) -> pb.Agent:
    metadata = [(NS_KEY, ns)] if ns else None
    return stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id), metadata=metadata, timeout=10).agent


def trail(stub: Stub, agent_id: str, *, ns: str | None = None) -> list[pb.Transition]:
    metadata = [(NS_KEY, ns)] if ns else None
    request = pb.ListTransitionsRequest(agent_id=agent_id, page_size=1000)
    return list(stub.ListTransitions(request, metadata=metadata, timeout=10).transitions)


def list_ids(stub: Stub, *, ns: str | None = None, **fields: Any) -> list[str]:
    metadata = [(NS_KEY, ns)] if ns else None
    reply = stub.ListAgents(
        pb.ListAgentsRequest(page_size=1000, **fields), metadata=metadata, timeout=10
    )
    assert reply.next_page_token == ""
    return [a.agent_id for a in reply.agents]


def refused(call: Any, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    return error


def details(error: grpc.RpcError) -> dict[str, Any]:
    """The google.rpc details of a failed call, by message type."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status"
    assert status.message == error.details()
    found: dict[str, Any] = {}
    for kind in (
        error_details_pb2.BadRequest,
        error_details_pb2.ErrorInfo,
        error_details_pb2.PreconditionFailure,
    ):
        for packed in status.details:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found[kind.__name__] = message
    return found


def violations(error: grpc.RpcError) -> dict[str, str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = details(error)["BadRequest"]
    return {v.field: v.description for v in bad.field_violations}


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    info = details(error)["ErrorInfo"]
    assert info.domain == "stateward.dev"
    return info


def micros(ts: Any) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def now_us() -> int:
    return time.time_ns() // 1000


# -- CreateAgent ---------------------------------------------------------------------------


def test_create_returns_a_created_agent_with_server_times(stub: Stub) -> None:
    before = now_us()
    config = b'{"model": "m", "big": 123456789012345678901234567890}'
    agent = create(stub, "agent-1", type="worker", config_json=config, labels={"team": "a"})
    after = now_us()
    assert agent.agent_id == "agent-1"
    assert agent.type == "worker"
    assert agent.config_json == config  # byte for byte: big integers survive exactly
    assert dict(agent.labels) == {"team": "a"}
    assert agent.status == CREATED
    assert agent.etag
    assert not agent.HasField("last_error")
    assert before <= micros(agent.create_time) <= after
    assert agent.update_time == agent.create_time
    for unset in ("initialize_time", "activate_time", "pause_time", "terminate_time"):
        assert not agent.HasField(unset), unset
    assert get(stub, "agent-1") == agent


def test_times_are_utc(stub: Stub) -> None:
    agent = create(stub, "agent-utc")
    stamped = agent.create_time.ToDatetime(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 300
    assert agent.create_time.nanos % 1000 == 0  # microsecond resolution


def test_create_defaults_config_to_an_empty_object(stub: Stub) -> None:
    assert create(stub, "agent-1").config_json == b"{}"


def test_create_writes_the_first_audit_record(stub: Stub) -> None:
    agent = create(stub, "agent-1", request_id="req-create-1")
    [record] = trail(stub, "agent-1")
    assert record.from_status == S.Value("AGENT_STATUS_UNSPECIFIED")
    assert record.to_status == CREATED
    assert record.reason == "created"
    assert record.request_id == "req-create-1"
    assert record.create_time == agent.create_time
    assert record.event_sequence > 0


def test_duplicate_id_is_already_exists(stub: Stub) -> None:
    create(stub, "agent-1", type="first")
    error = refused(lambda: create(stub, "agent-1", type="second"), grpc.StatusCode.ALREADY_EXISTS)
    assert "agent-1" in error.details()
    assert error_info(error).reason == "ALREADY_EXISTS"
    assert get(stub, "agent-1").type == "first"


def test_create_replay_returns_the_original_and_writes_nothing(stub: Stub) -> None:
    first = stub.CreateAgent(pb.CreateAgentRequest(agent_id="agent-1", type="w", request_id="r-1"))
    act(stub, "initialize", "agent-1")  # the agent moves on; the replay still answers as before
    again = stub.CreateAgent(pb.CreateAgentRequest(agent_id="agent-1", type="w", request_id="r-1"))
    assert again == first
    assert again.agent.status == CREATED
    assert [name(t.to_status) for t in trail(stub, "agent-1")] == ["CREATED", "INITIALIZED"]


def test_create_with_a_reused_request_id_for_another_request_is_invalid(stub: Stub) -> None:
    create(stub, "agent-1", request_id="r-1")
    error = refused(
        lambda: create(stub, "agent-2", request_id="r-1"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "already used" in violations(error)["request_id"]
    refused(lambda: get(stub, "agent-2"), grpc.StatusCode.NOT_FOUND)
    # Same id, different body: still a different request.
    error = refused(
        lambda: create(stub, "agent-1", type="other", request_id="r-1"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "request_id" in violations(error)


def test_a_request_id_cannot_be_reused_by_another_method(stub: Stub) -> None:
    create(stub, "agent-1", request_id="r-1")
    error = refused(
        lambda: act(stub, "initialize", "agent-1", request_id="r-1"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "CreateAgent" in violations(error)["request_id"]
    assert get(stub, "agent-1").status == CREATED


BAD_CREATE_FIELDS: list[tuple[dict[str, Any], str, str]] = [
    ({"type": ""}, "type", "is required"),
    ({"type": "t" * 129}, "type", "at most 128 characters"),
    ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels", "at most 64 labels"),
    ({"labels": {"k" * 257: "v"}}, "labels[", "keys must be 1 to 256"),
    ({"labels": {"k": "v" * 257}}, "labels[", "values must be at most 256"),
    ({"config_json": b"[1, 2]"}, "config_json", "must be a JSON object"),
    ({"config_json": b'{"a": "\xff"}'}, "config_json", "UTF-8"),
    ({"config_json": b'{"a": NaN}'}, "config_json", "valid JSON"),
    ({"config_json": b"{" * 10}, "config_json", "valid JSON"),
    ({"config_json": b'{"a":' * 65 + b"1" + b"}" * 65}, "config_json", "nested at most 64"),
    (
        {"config_json": b'{"a": "' + b"x" * (1 << 20) + b'"}'},
        "config_json",
        "at most 1048576 bytes",
    ),
    ({"request_id": "has space"}, "request_id", "printable ASCII"),
]


def test_create_refuses_bad_fields(stub: Stub) -> None:
    for fields, field, words in BAD_CREATE_FIELDS:
        request = pb.CreateAgentRequest(agent_id="agent-1", **{"type": "worker", **fields})
        error = refused(lambda r=request: stub.CreateAgent(r), grpc.StatusCode.INVALID_ARGUMENT)
        [(got_field, description)] = violations(error).items()
        assert got_field.startswith(field), (field, got_field)
        assert words in description, (words, description)
        assert words in error.details()
    refused(lambda: get(stub, "agent-1"), grpc.StatusCode.NOT_FOUND)


def test_every_bad_field_is_named_in_one_answer(stub: Stub) -> None:
    request = pb.CreateAgentRequest(agent_id="..", type="", config_json=b"[]", labels={"": "x"})
    error = refused(lambda: stub.CreateAgent(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(violations(error)) == {"agent_id", "type", "config_json", "labels['']"}


# -- hostile ids, on every RPC that takes one -----------------------------------------------

ID_CALLS = {
    "CreateAgent": lambda s, i: s.CreateAgent(pb.CreateAgentRequest(agent_id=i, type="t")),
    "GetAgent": lambda s, i: s.GetAgent(pb.GetAgentRequest(agent_id=i)),
    "UpdateAgent": lambda s, i: s.UpdateAgent(
        pb.UpdateAgentRequest(agent_id=i, update_labels=True)
    ),
    "DeleteAgent": lambda s, i: s.DeleteAgent(pb.DeleteAgentRequest(agent_id=i)),
    "ListTransitions": lambda s, i: s.ListTransitions(pb.ListTransitionsRequest(agent_id=i)),
    **{method: (lambda s, i, a=action: act(s, a, i)) for action, (method, _) in ACTIONS.items()},
}


def test_hostile_ids_are_invalid_argument_on_every_rpc(stub: Stub) -> None:
    for method, call in ID_CALLS.items():
        for agent_id in [*HOSTILE_IDS, ""]:
            error = refused(lambda c=call, i=agent_id: c(stub, i), grpc.StatusCode.INVALID_ARGUMENT)
            assert list(violations(error)) == ["agent_id"], (method, agent_id)
            assert "agent_id" in error.details()


# -- GetAgent --------------------------------------------------------------------------------


def test_get_a_missing_agent_is_not_found(stub: Stub) -> None:
    error = refused(lambda: get(stub, "nobody"), grpc.StatusCode.NOT_FOUND)
    assert "nobody" in error.details()
    assert error_info(error).reason == "NOT_FOUND"


# -- ListAgents ------------------------------------------------------------------------------


def test_list_filters_by_status_type_and_labels(stub: Stub) -> None:
    agent_in(stub, "a-created", CREATED, type="worker", labels={"team": "a", "tier": "1"})
    agent_in(stub, "b-active", ACTIVE, type="worker", labels={"team": "a", "tier": "2"})
    agent_in(stub, "c-active", ACTIVE, type="planner", labels={"team": "b"})
    agent_in(stub, "d-error", ERROR, type="planner", labels={})
    assert list_ids(stub) == ["a-created", "b-active", "c-active", "d-error"]
    assert list_ids(stub, status=ACTIVE) == ["b-active", "c-active"]
    assert list_ids(stub, status=ERROR) == ["d-error"]
    assert list_ids(stub, status=PAUSED) == []
    assert list_ids(stub, type="worker") == ["a-created", "b-active"]
    assert list_ids(stub, type="nobody") == []
    assert list_ids(stub, labels={"team": "a"}) == ["a-created", "b-active"]
    assert list_ids(stub, labels={"team": "a", "tier": "2"}) == ["b-active"]
    assert list_ids(stub, labels={"team": "a", "tier": "3"}) == []
    assert list_ids(stub, labels={"tier": "1"}) == ["a-created"]
    assert list_ids(stub, status=ACTIVE, type="planner", labels={"team": "b"}) == ["c-active"]
    assert list_ids(stub, status=ACTIVE, type="worker", labels={"team": "b"}) == []


def test_list_returns_whole_agents(stub: Stub) -> None:
    agent = agent_in(stub, "a", ACTIVE, labels={"k": "v"}, config_json=b'{"x":1}')
    [listed] = stub.ListAgents(pb.ListAgentsRequest()).agents
    assert listed == agent


def test_list_page_size_defaults_to_50(stub: Stub) -> None:
    futures = [
        stub.CreateAgent.future(pb.CreateAgentRequest(agent_id=f"agent-{i:03d}", type="t"))
        for i in range(51)
    ]
    for future in futures:
        future.result(timeout=30)
    first = stub.ListAgents(pb.ListAgentsRequest())
    assert len(first.agents) == 50
    assert first.next_page_token
    second = stub.ListAgents(pb.ListAgentsRequest(page_token=first.next_page_token))
    assert [a.agent_id for a in second.agents] == ["agent-050"]
    assert second.next_page_token == ""
    exact = stub.ListAgents(pb.ListAgentsRequest(page_size=51))
    assert len(exact.agents) == 51 and exact.next_page_token == ""
    assert len(stub.ListAgents(pb.ListAgentsRequest(page_size=1000)).agents) == 51


def test_list_refuses_bad_page_sizes(stub: Stub) -> None:
    for page_size in [1001, -1, 2**31 - 1, -(2**31)]:
        request = pb.ListAgentsRequest(page_size=page_size)
        error = refused(lambda r=request: stub.ListAgents(r), grpc.StatusCode.INVALID_ARGUMENT)
        assert "between 0 and 1000" in violations(error)["page_size"]


def test_list_order_is_stable_while_agents_are_added(stub: Stub) -> None:
    for i in range(0, 20, 2):
        create(stub, f"agent-{i:02d}")
    seen: list[str] = []
    token = ""
    added = 0
    while True:
        reply = stub.ListAgents(pb.ListAgentsRequest(page_size=3, page_token=token))
        seen.extend(a.agent_id for a in reply.agents)
        if not reply.next_page_token:
            break
        token = reply.next_page_token
        # Between pages: one agent sorting before the cursor, one after it.
        create(stub, f"agent-{added:02d}a")
        create(stub, f"agent-{19 - added:02d}z")
        added += 1
    originals = [f"agent-{i:02d}" for i in range(0, 20, 2)]
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))
    assert set(originals) <= set(seen)


def test_list_refuses_forged_and_foreign_tokens(stub: Stub) -> None:
    for i in range(3):
        create(stub, f"agent-{i}", labels={"team": "a"})
    token = stub.ListAgents(pb.ListAgentsRequest(page_size=1)).next_page_token
    assert token
    for bad in ("forged", token[:-2], token + "x", "A" * 3000, "é"):
        error = refused(
            lambda b=bad: stub.ListAgents(pb.ListAgentsRequest(page_size=1, page_token=b)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "page_token" in violations(error)
    # A real token used with other filters.
    for other in (
        pb.ListAgentsRequest(page_size=1, page_token=token, status=CREATED),
        pb.ListAgentsRequest(page_size=1, page_token=token, type="worker"),
        pb.ListAgentsRequest(page_size=1, page_token=token, labels={"team": "a"}),
    ):
        error = refused(lambda o=other: stub.ListAgents(o), grpc.StatusCode.INVALID_ARGUMENT)
        assert "same filters" in violations(error)["page_token"]
    # A token from the audit trail is not a ListAgents token.
    act(stub, "initialize", "agent-0")
    trail_token = stub.ListTransitions(
        pb.ListTransitionsRequest(agent_id="agent-0", page_size=1)
    ).next_page_token
    refused(
        lambda: stub.ListAgents(pb.ListAgentsRequest(page_size=1, page_token=trail_token)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # The page size may change between pages.
    reply = stub.ListAgents(pb.ListAgentsRequest(page_size=5, page_token=token))
    assert [a.agent_id for a in reply.agents] == ["agent-1", "agent-2"]


def test_list_refuses_bad_filters(stub: Stub) -> None:
    error = refused(
        lambda: stub.ListAgents(pb.ListAgentsRequest(type="t" * 129)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "type" in violations(error)
    labels = {f"k{i}": "v" for i in range(65)}
    error = refused(
        lambda: stub.ListAgents(pb.ListAgentsRequest(labels=labels)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "labels" in violations(error)
    error = refused(
        lambda: stub.ListAgents(pb.ListAgentsRequest(status=99)), grpc.StatusCode.INVALID_ARGUMENT
    )  # type: ignore[arg-type]
    assert "status" in violations(error)


# -- UpdateAgent -----------------------------------------------------------------------------


def test_update_config_and_labels_with_the_etag(stub: Stub) -> None:
    agent = create(stub, "agent-1", config_json=b'{"v":1}', labels={"team": "a"})
    updated = stub.UpdateAgent(
        pb.UpdateAgentRequest(
            agent_id="agent-1", etag=agent.etag, config_json=b'{"v":2}', update_config=True
        )
    ).agent
    assert updated.config_json == b'{"v":2}'
    assert dict(updated.labels) == {"team": "a"}  # untouched
    assert updated.etag != agent.etag
    assert micros(updated.update_time) >= micros(agent.update_time)
    assert updated.create_time == agent.create_time
    relabelled = stub.UpdateAgent(
        pb.UpdateAgentRequest(
            agent_id="agent-1", etag=updated.etag, labels={"team": "b"}, update_labels=True
        )
    ).agent
    assert relabelled.config_json == b'{"v":2}'
    assert dict(relabelled.labels) == {"team": "b"}
    assert get(stub, "agent-1") == relabelled
    # The label index follows the update.
    assert list_ids(stub, labels={"team": "b"}) == ["agent-1"]
    assert list_ids(stub, labels={"team": "a"}) == []
    cleared = stub.UpdateAgent(pb.UpdateAgentRequest(agent_id="agent-1", update_labels=True)).agent
    assert dict(cleared.labels) == {}
    assert list_ids(stub, labels={"team": "b"}) == []


def test_update_with_a_stale_etag_is_aborted(stub: Stub) -> None:
    agent = create(stub, "agent-1")
    current = stub.UpdateAgent(
        pb.UpdateAgentRequest(agent_id="agent-1", labels={"a": "1"}, update_labels=True)
    ).agent
    error = refused(
        lambda: stub.UpdateAgent(
            pb.UpdateAgentRequest(
                agent_id="agent-1", etag=agent.etag, labels={"a": "2"}, update_labels=True
            )
        ),
        grpc.StatusCode.ABORTED,
    )
    info = error_info(error)
    assert info.reason == "ETAG_MISMATCH"
    assert info.metadata["current_etag"] == current.etag
    assert dict(get(stub, "agent-1").labels) == {"a": "1"}


def test_a_transition_changes_the_etag(stub: Stub) -> None:
    agent = create(stub, "agent-1")
    moved = act(stub, "initialize", "agent-1").agent
    assert moved.etag != agent.etag
    refused(
        lambda: stub.UpdateAgent(
            pb.UpdateAgentRequest(agent_id="agent-1", etag=agent.etag, update_labels=True)
        ),
        grpc.StatusCode.ABORTED,
    )


def test_update_errors(stub: Stub) -> None:
    refused(
        lambda: stub.UpdateAgent(pb.UpdateAgentRequest(agent_id="nobody", update_labels=True)),
        grpc.StatusCode.NOT_FOUND,
    )
    create(stub, "agent-1")
    error = refused(
        lambda: stub.UpdateAgent(pb.UpdateAgentRequest(agent_id="agent-1", etag="not-an-etag")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "etag" in violations(error)
    error = refused(
        lambda: stub.UpdateAgent(
            pb.UpdateAgentRequest(agent_id="agent-1", config_json=b"[]", update_config=True)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "config_json" in violations(error)
    labels = {"k" * 300: "v"}
    error = refused(
        lambda: stub.UpdateAgent(
            pb.UpdateAgentRequest(agent_id="agent-1", labels=labels, update_labels=True)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert any(field.startswith("labels") for field in violations(error))
    act(stub, "terminate", "agent-1")
    error = refused(
        lambda: stub.UpdateAgent(pb.UpdateAgentRequest(agent_id="agent-1", update_labels=True)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert error_info(error).reason == "AGENT_TERMINATED"


def test_update_replay_returns_the_same_answer(stub: Stub) -> None:
    create(stub, "agent-1")
    request = pb.UpdateAgentRequest(
        agent_id="agent-1", labels={"a": "1"}, update_labels=True, request_id="u-1"
    )
    first = stub.UpdateAgent(request)
    again = stub.UpdateAgent(request)
    assert again == first
    assert get(stub, "agent-1").etag == first.agent.etag  # applied once


# -- transitions -----------------------------------------------------------------------------


def test_the_lifecycle_walk_stamps_times_and_audits_each_step(stub: Stub) -> None:
    agent = create(stub, "agent-1")
    stamps = {}
    for action, status, field in [
        ("initialize", INITIALIZED, "initialize_time"),
        ("activate", ACTIVE, "activate_time"),
        ("pause", PAUSED, "pause_time"),
        ("resume", ACTIVE, "activate_time"),
        ("terminate", TERMINATED, "terminate_time"),
    ]:
        before = now_us()
        reply = act(stub, action, "agent-1", reason=f"because {action}")
        after = now_us()
        assert reply.agent.status == status
        assert before <= micros(getattr(reply.agent, field)) <= after
        assert reply.agent.update_time == getattr(reply.agent, field)
        assert reply.transition.to_status == status
        assert reply.transition.reason == f"because {action}"
        assert reply.transition.agent_id == "agent-1"
        assert reply.transition.create_time == reply.agent.update_time
        stamps[action] = reply.agent
    final = get(stub, "agent-1")
    assert final.create_time == agent.create_time
    assert final.initialize_time == stamps["initialize"].initialize_time
    assert final.pause_time == stamps["pause"].pause_time
    assert final.activate_time == stamps["resume"].activate_time
    steps = [(name(t.from_status), name(t.to_status)) for t in trail(stub, "agent-1")]
    assert steps == [
        ("UNSPECIFIED", "CREATED"),
        ("CREATED", "INITIALIZED"),
        ("INITIALIZED", "ACTIVE"),
        ("ACTIVE", "PAUSED"),
        ("PAUSED", "ACTIVE"),
        ("ACTIVE", "TERMINATED"),
    ]


def test_every_transition_from_every_status(stub: Stub) -> None:
    """Accepted moves land where the table says; refused ones carry their details."""
    for n, (status, path) in enumerate(PATH_TO.items()):
        for action in ACTIONS:
            agent_id = f"agent-{n}-{action}"
            before = agent_in(stub, agent_id, status)
            expected = MOVES.get((action, status))
            if expected is not None:
                reply = act(stub, action, agent_id)
                assert reply.agent.status == expected, (name(status), action)
                assert (reply.transition.from_status, reply.transition.to_status) == (
                    status,
                    expected,
                )
                assert len(trail(stub, agent_id)) == len(path) + 2
                continue
            error = refused(
                lambda a=action, i=agent_id: act(stub, a, i), grpc.StatusCode.FAILED_PRECONDITION
            )
            found = details(error)
            info = found["ErrorInfo"]
            assert info.reason == "INVALID_TRANSITION"
            assert info.metadata["current_status"] == name(status)
            allowed = {s for s in info.metadata["allowed_statuses"].split(",") if s}
            assert allowed == {name(s) for s in ALLOWED[status]}
            assert name(status) in error.details()
            [violation] = found["PreconditionFailure"].violations
            assert violation.type == "INVALID_TRANSITION"
            assert violation.subject == f"agents/{agent_id}"
            # Nothing changed and nothing was audited.
            assert get(stub, agent_id) == before
            assert len(trail(stub, agent_id)) == len(path) + 1


def test_transitions_on_a_missing_agent_are_not_found(stub: Stub) -> None:
    for action in ACTIONS:
        error = refused(lambda a=action: act(stub, a, "nobody"), grpc.StatusCode.NOT_FOUND)
        assert "nobody" in error.details()


def test_transition_field_limits(stub: Stub) -> None:
    create(stub, "agent-1")
    error = refused(
        lambda: act(stub, "initialize", "agent-1", reason="r" * 1025),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "at most 1024" in violations(error)["reason"]
    assert act(stub, "initialize", "agent-1", reason="r" * 1024).transition.reason == "r" * 1024
    error = refused(
        lambda: act(stub, "activate", "agent-1", request_id="a b"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "request_id" in violations(error)
    error = refused(
        lambda: act(stub, "activate", "agent-1", reason="a\x00"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "NUL" in violations(error)["reason"]


def test_default_reasons_name_the_action(stub: Stub) -> None:
    create(stub, "agent-1")
    assert act(stub, "initialize", "agent-1").transition.reason == "initialize"
    assert act(stub, "report_error", "agent-1").transition.reason == "report_error"


def test_report_error_stores_the_last_error(stub: Stub) -> None:
    agent_in(stub, "agent-1", ACTIVE)
    before = now_us()
    reply = act(
        stub,
        "report_error",
        "agent-1",
        message="model provider timed out",
        kind=common_pb2.ERROR_KIND_TIMEOUT,
        details_json=b'{"after_s": 30}',
    )
    after = now_us()
    assert reply.agent.status == ERROR
    error = reply.agent.last_error
    assert error.message == "model provider timed out"
    assert error.kind == common_pb2.ERROR_KIND_TIMEOUT
    assert error.details_json == b'{"after_s": 30}'
    assert before <= micros(error.time) <= after
    assert get(stub, "agent-1").last_error == error
    assert (name(reply.transition.from_status), name(reply.transition.to_status)) == (
        "ACTIVE",
        "ERROR",
    )


def test_report_error_validates_its_fields(stub: Stub) -> None:
    create(stub, "agent-1")
    for fields, field in [
        ({"message": ""}, "message"),
        ({"message": "m" * 4097}, "message"),
        ({"details_json": b"[1]"}, "details_json"),
        ({"details_json": b"\xff"}, "details_json"),
        ({"kind": 99}, "kind"),
    ]:
        error = refused(
            lambda f=fields: act(stub, "report_error", "agent-1", **f),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert field in violations(error), fields
    assert get(stub, "agent-1").status == CREATED


def test_reset_moves_error_to_initialized(stub: Stub) -> None:
    agent_in(stub, "agent-1", ERROR)
    reply = act(stub, "reset", "agent-1", reason="fixed the key")
    assert reply.agent.status == INITIALIZED
    assert (name(reply.transition.from_status), name(reply.transition.to_status)) == (
        "ERROR",
        "INITIALIZED",
    )
    assert reply.transition.reason == "fixed the key"
    assert reply.agent.initialize_time == reply.agent.update_time
    assert act(stub, "activate", "agent-1").agent.status == ACTIVE


@pytest.mark.parametrize("action", ["pause", "report_error", "terminate"])
def test_a_repeated_transition_with_its_request_id_replays(stub: Stub, action: str) -> None:
    agent_in(stub, "agent-1", ACTIVE)
    first = act(stub, action, "agent-1", request_id=f"{action}-1")
    assert first.transition.request_id == f"{action}-1"
    records = trail(stub, "agent-1")
    again = act(stub, action, "agent-1", request_id=f"{action}-1")
    assert again == first
    assert trail(stub, "agent-1") == records
    # Without the request_id the same call is a refused transition, not a replay.
    refused(lambda: act(stub, action, "agent-1"), grpc.StatusCode.FAILED_PRECONDITION)


def test_a_replay_answers_as_first_even_after_later_moves(stub: Stub) -> None:
    agent_in(stub, "agent-1", ACTIVE)
    first = act(stub, "pause", "agent-1", request_id="p-1")
    act(stub, "resume", "agent-1")
    assert act(stub, "pause", "agent-1", request_id="p-1") == first
    assert get(stub, "agent-1").status == ACTIVE
    assert len(trail(stub, "agent-1")) == 5


def test_a_refused_transition_stores_no_answer(stub: Stub) -> None:
    create(stub, "agent-1")
    refused(
        lambda: act(stub, "pause", "agent-1", request_id="p-1"), grpc.StatusCode.FAILED_PRECONDITION
    )
    act(stub, "initialize", "agent-1")
    act(stub, "activate", "agent-1")
    # The retry is evaluated afresh, since the first attempt changed nothing.
    assert act(stub, "pause", "agent-1", request_id="p-1").agent.status == PAUSED


def test_a_request_id_replayed_on_another_agent_is_invalid(stub: Stub) -> None:
    agent_in(stub, "agent-1", ACTIVE)
    agent_in(stub, "agent-2", ACTIVE)
    act(stub, "pause", "agent-1", request_id="p-1")
    error = refused(
        lambda: act(stub, "pause", "agent-2", request_id="p-1"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "request_id" in violations(error)
    assert get(stub, "agent-2").status == ACTIVE


# -- DeleteAgent -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [CREATED, ACTIVE, ERROR])
def test_delete_needs_a_terminated_agent(stub: Stub, status: int) -> None:
    agent_in(stub, "agent-1", status)
    error = refused(
        lambda: stub.DeleteAgent(pb.DeleteAgentRequest(agent_id="agent-1")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    info = error_info(error)
    assert info.reason == "AGENT_NOT_TERMINATED"
    assert info.metadata["current_status"] == name(status)
    assert "terminate it first" in error.details()
    [violation] = details(error)["PreconditionFailure"].violations
    assert violation.subject == "agents/agent-1"
    assert get(stub, "agent-1").status == status


def test_delete_removes_the_agent_and_its_records(stub: Stub) -> None:
    agent_in(stub, "agent-1", TERMINATED, labels={"team": "gone"})
    agent_in(stub, "agent-2", CREATED, labels={"team": "gone"})
    reply = stub.DeleteAgent(pb.DeleteAgentRequest(agent_id="agent-1", request_id="d-1"))
    assert reply.agent_id == "agent-1"
    refused(lambda: get(stub, "agent-1"), grpc.StatusCode.NOT_FOUND)
    refused(lambda: trail(stub, "agent-1"), grpc.StatusCode.NOT_FOUND)
    assert list_ids(stub, labels={"team": "gone"}) == ["agent-2"]
    # The retry answers as the first call did.
    assert stub.DeleteAgent(pb.DeleteAgentRequest(agent_id="agent-1", request_id="d-1")) == reply
    refused(
        lambda: stub.DeleteAgent(pb.DeleteAgentRequest(agent_id="agent-1")),
        grpc.StatusCode.NOT_FOUND,
    )
    # The id is free again, with a fresh trail and no leftover labels.
    create(stub, "agent-1")
    assert [name(t.to_status) for t in trail(stub, "agent-1")] == ["CREATED"]
    assert list_ids(stub, labels={"team": "gone"}) == ["agent-2"]
    # The other agent is untouched.
    assert len(trail(stub, "agent-2")) == 1


# -- ListTransitions -------------------------------------------------------------------------


def test_the_audit_trail_pages_oldest_first(stub: Stub) -> None:
    create(stub, "agent-1", request_id="c")
    for action in ["initialize", "activate", "pause", "resume", "pause"]:
        act(
            stub,
            action,
            "agent-1",
            request_id=f"r-{action}-{len(trail(stub, 'agent-1'))}",
            reason=action,
        )
    everything = trail(stub, "agent-1")
    assert len(everything) == 6
    pages: list[list[pb.Transition]] = []
    token = ""
    while True:
        reply = stub.ListTransitions(
            pb.ListTransitionsRequest(agent_id="agent-1", page_size=4, page_token=token)
        )
        pages.append(list(reply.transitions))
        token = reply.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [4, 2]
    assert [t for page in pages for t in page] == everything
    ids = [t.transition_id for t in everything]
    sequences = [t.event_sequence for t in everything]
    times = [micros(t.create_time) for t in everything]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert sequences == sorted(sequences) and len(set(sequences)) == 6
    assert times == sorted(times)
    for before, after in zip(everything, everything[1:], strict=False):
        assert after.from_status == before.to_status
    assert [t.request_id for t in everything] == [
        "c",
        *[
            f"r-{a}-{i + 1}"
            for i, a in enumerate(["initialize", "activate", "pause", "resume", "pause"])
        ],
    ]
    assert [t.reason for t in everything[1:]] == [
        "initialize",
        "activate",
        "pause",
        "resume",
        "pause",
    ]
    default = stub.ListTransitions(pb.ListTransitionsRequest(agent_id="agent-1"))
    assert list(default.transitions) == everything and default.next_page_token == ""


def test_the_audit_trail_refuses_bad_paging(stub: Stub) -> None:
    agent_in(stub, "agent-1", ACTIVE)
    agent_in(stub, "agent-2", ACTIVE)
    token = stub.ListTransitions(
        pb.ListTransitionsRequest(agent_id="agent-1", page_size=1)
    ).next_page_token
    assert token
    error = refused(
        lambda: stub.ListTransitions(
            pb.ListTransitionsRequest(agent_id="agent-2", page_token=token)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_token" in violations(error)
    refused(
        lambda: stub.ListTransitions(
            pb.ListTransitionsRequest(agent_id="agent-1", page_token="forged")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    error = refused(
        lambda: stub.ListTransitions(pb.ListTransitionsRequest(agent_id="agent-1", page_size=1001)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_size" in violations(error)
    refused(
        lambda: stub.ListTransitions(pb.ListTransitionsRequest(agent_id="nobody")),
        grpc.StatusCode.NOT_FOUND,
    )


# -- namespaces ------------------------------------------------------------------------------


def test_namespaces_isolate_agents(stub: Stub) -> None:
    create(stub, "shared", ns="team-a", type="alpha", request_id="same-request")
    create(stub, "shared", ns="team-b", type="beta", request_id="same-request")
    assert get(stub, "shared", ns="team-a").type == "alpha"
    assert get(stub, "shared", ns="team-b").type == "beta"
    refused(lambda: get(stub, "shared"), grpc.StatusCode.NOT_FOUND)  # the default namespace
    act(stub, "initialize", "shared", ns="team-a")
    assert get(stub, "shared", ns="team-a").status == INITIALIZED
    assert get(stub, "shared", ns="team-b").status == CREATED
    assert len(trail(stub, "shared", ns="team-a")) == 2
    assert len(trail(stub, "shared", ns="team-b")) == 1
    assert list_ids(stub, ns="team-a") == ["shared"]
    assert list_ids(stub) == []
    create(stub, "shared")
    act(stub, "terminate", "shared", ns="team-b")
    stub.DeleteAgent(pb.DeleteAgentRequest(agent_id="shared"), metadata=[(NS_KEY, "team-b")])
    assert get(stub, "shared", ns="team-a").status == INITIALIZED
    assert get(stub, "shared").status == CREATED


def test_bad_namespaces_are_invalid_argument(stub: Stub) -> None:
    request = pb.GetAgentRequest(agent_id="agent-1")
    for namespace in ["", "Team", "../etc", "a/b", "a" * 64, "a b", "-x"]:
        error = refused(
            lambda n=namespace: stub.GetAgent(request, metadata=[(NS_KEY, n)]),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert NS_KEY in violations(error), namespace
