"""StateService over a real server on SQLite and PostgreSQL, through the raw stubs.

Compare-and-set, version and as_of reads, retention (with checkpoint-pinned
versions), merge patches, exact round trips, schema migrations, the hot-read cache
and its coherence across replicas, and the lost-update test.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, delete, insert, select

from stateward.server.config import Settings
from stateward.server.services.state import DatabaseInUse
from stateward.storage import schema
from stateward.v1 import lifecycle_pb2 as lpb
from stateward.v1 import lifecycle_pb2_grpc, state_pb2_grpc
from stateward.v1 import state_pb2 as pb
from tests.support.postgres import PostgresCluster
from tests.support.server import ServerThread

HISTORY = 5
MAX_BYTES = 256 << 10
NS_KEY = "x-stateward-namespace"

StateStub = state_pb2_grpc.StateServiceStub
AgentStub = lifecycle_pb2_grpc.LifecycleServiceStub


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(
        settings,
        state_history=HISTORY,
        state_max_bytes=MAX_BYTES,
        state_migrations="tests.support.sample_migrations",
    )


@pytest.fixture
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as channel:
        yield channel


@pytest.fixture
def state(channel: grpc.Channel) -> StateStub:
    return StateStub(channel)


@pytest.fixture
def agents(channel: grpc.Channel) -> AgentStub:
    return AgentStub(channel)


# -- helpers ------------------------------------------------------------------------------
def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def create(agents: AgentStub, agent_id: str, type: str = "worker") -> None:
    agents.CreateAgent(lpb.CreateAgentRequest(agent_id=agent_id, type=type))


def save(state: StateStub, agent_id: str, document: Any, **fields: Any) -> pb.StateVersion:
    raw = document if isinstance(document, bytes) else encode(document)
    reply = state.SaveState(pb.SaveStateRequest(agent_id=agent_id, document_json=raw, **fields))
    return reply.state


def get(state: StateStub, agent_id: str, **selector: Any) -> pb.StateVersion:
    return state.GetState(pb.GetStateRequest(agent_id=agent_id, **selector)).state


def document(version: pb.StateVersion) -> Any:
    return json.loads(version.document_json)


def fails(call: Callable[..., Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)
    return raised.value


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


def violations(error: grpc.RpcError) -> dict[str, str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    raise AssertionError(f"no BadRequest in {status}")


def at(micros: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)


def micros(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def checkpoint_row(database_url: str, agent_id: str, version: int, *, remove: bool = False) -> None:
    """Pin (or unpin) a state version the way a checkpoint manifest does, directly in SQL."""
    engine = create_engine(database_url)
    table = schema.checkpoints
    checkpoint_id = f"cp-{agent_id}-{version}"
    try:
        with engine.begin() as conn:
            if remove:
                conn.execute(delete(table).where(table.c.checkpoint_id == checkpoint_id))
            else:
                conn.execute(
                    insert(table).values(
                        namespace="default",
                        checkpoint_id=checkpoint_id,
                        agent_id=agent_id,
                        state_version=version,
                        size=0,
                        stored_size=0,
                        sha256="0" * 64,
                        compression="none",
                        blob_key=f"test/{checkpoint_id}",
                        labels="{}",
                        created_at=0,
                    )
                )
    finally:
        engine.dispose()


def versions(state: StateStub, agent_id: str) -> list[int]:
    reply = state.ListStateVersions(pb.ListStateVersionsRequest(agent_id=agent_id, page_size=1000))
    return [v.version for v in reply.versions]


# -- writes and reads ---------------------------------------------------------------------
def test_save_get_and_compare_and_set(state: StateStub, agents: AgentStub) -> None:
    create(agents, "cas")
    first = save(state, "cas", {"step": 1}, expected_version=0)
    assert (first.version, first.schema_version, first.size_bytes) == (1, 1, len(b'{"step":1}'))
    assert first.document_json == b""  # SaveState answers without the document
    assert first.event_sequence > 0 and first.create_time.seconds > 0

    latest = get(state, "cas")
    assert document(latest) == {"step": 1}
    assert latest.event_sequence == first.event_sequence

    second = save(state, "cas", {"step": 2}, expected_version=1)
    assert second.version == 2 and second.event_sequence > first.event_sequence

    for stale in (0, 1, 7):
        error = fails(
            state.SaveState,
            pb.SaveStateRequest(agent_id="cas", document_json=b"{}", expected_version=stale),
        )
        assert error.code() == grpc.StatusCode.ABORTED
        info = error_info(error)
        assert info.reason == "VERSION_CONFLICT"
        assert info.metadata["current_version"] == "2"

    # Without expected_version the write is unconditional.
    assert save(state, "cas", {"step": 3}).version == 3
    assert agents.GetAgent(lpb.GetAgentRequest(agent_id="cas")).agent.state_version == 3


def test_version_and_as_of_reads(state: StateStub, agents: AgentStub) -> None:
    create(agents, "timeline")
    written = [save(state, "timeline", {"v": n}) for n in (1, 2, 3)]
    times = [micros(v.create_time) for v in written]
    assert times == sorted(times) and len(set(times)) == 3  # sequential commits

    for n, version in enumerate(written, start=1):
        assert document(get(state, "timeline", version=n)) == {"v": n}
        as_of = get(state, "timeline", as_of=version.create_time)
        assert (as_of.version, document(as_of)) == (n, {"v": n})
    assert get(state, "timeline", as_of=at(times[1] - 1)).version == 1
    assert get(state, "timeline", as_of=at(times[2] + 3_600_000_000)).version == 3

    error = fails(state.GetState, pb.GetStateRequest(agent_id="timeline", as_of=at(times[0] - 1)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "at or before" in error.details()
    error = fails(state.GetState, pb.GetStateRequest(agent_id="timeline", version=99))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no state version 99" in error.details() and "the latest is 3" in error.details()
    far = timestamp_pb2.Timestamp(seconds=2**62)
    assert "as_of" in violations(
        fails(state.GetState, pb.GetStateRequest(agent_id="timeline", as_of=far))
    )
    assert "version" in violations(
        fails(state.GetState, pb.GetStateRequest(agent_id="timeline", version=0))
    )


def test_missing_agents_and_missing_state(state: StateStub, agents: AgentStub) -> None:
    for call, request in [
        (state.GetState, pb.GetStateRequest(agent_id="ghost")),
        (state.SaveState, pb.SaveStateRequest(agent_id="ghost", document_json=b"{}")),
        (state.PatchState, pb.PatchStateRequest(agent_id="ghost", patch_json=b"{}")),
        (state.ClearState, pb.ClearStateRequest(agent_id="ghost")),
        (state.ListStateVersions, pb.ListStateVersionsRequest(agent_id="ghost")),
    ]:
        error = fails(call, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "agent 'ghost' does not exist" in error.details()

    create(agents, "blank")
    error = fails(state.GetState, pb.GetStateRequest(agent_id="blank"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "has no state" in error.details()
    assert versions(state, "blank") == []


def test_namespaces_are_separate(state: StateStub, agents: AgentStub) -> None:
    team = ((NS_KEY, "team-a"),)
    agents.CreateAgent(lpb.CreateAgentRequest(agent_id="shared", type="w"), metadata=team)
    state.SaveState(
        pb.SaveStateRequest(agent_id="shared", document_json=b'{"t":"a"}'), metadata=team
    )
    assert fails(state.GetState, pb.GetStateRequest(agent_id="shared")).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    create(agents, "shared")
    save(state, "shared", {"t": "default"})
    assert document(get(state, "shared")) == {"t": "default"}
    reply = state.GetState(pb.GetStateRequest(agent_id="shared"), metadata=team)
    assert document(reply.state) == {"t": "a"}


def test_terminated_agents_are_read_only(state: StateStub, agents: AgentStub) -> None:
    create(agents, "done")
    save(state, "done", {"final": True})
    agents.TerminateAgent(lpb.TerminateAgentRequest(agent_id="done"))
    for call, request in [
        (state.SaveState, pb.SaveStateRequest(agent_id="done", document_json=b"{}")),
        (state.PatchState, pb.PatchStateRequest(agent_id="done", patch_json=b'{"a":1}')),
        (state.ClearState, pb.ClearStateRequest(agent_id="done")),
    ]:
        error = fails(call, request)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(error).reason == "AGENT_TERMINATED"
    # A stale version does not hide why the write is refused (also once the read is cached).
    assert document(get(state, "done")) == {"final": True}
    stale = fails(
        state.SaveState,
        pb.SaveStateRequest(agent_id="done", document_json=b"{}", expected_version=7),
    )
    assert error_info(stale).reason == "AGENT_TERMINATED"
    assert document(get(state, "done")) == {"final": True}
    assert versions(state, "done") == [1]


def test_idempotent_retries(state: StateStub, agents: AgentStub) -> None:
    create(agents, "retry")
    request = pb.SaveStateRequest(agent_id="retry", document_json=b'{"a":1}', request_id="r-1")
    first = state.SaveState(request).state
    again = state.SaveState(request).state
    assert again == first
    assert versions(state, "retry") == [1]
    other = pb.SaveStateRequest(agent_id="retry", document_json=b'{"a":2}', request_id="r-1")
    assert "request_id" in violations(fails(state.SaveState, other))

    # A compare-and-set retried after it succeeded replays its answer, not a conflict.
    cas = pb.SaveStateRequest(
        agent_id="retry", document_json=b'{"a":3}', expected_version=1, request_id="r-2"
    )
    first = state.SaveState(cas).state
    assert first.version == 2
    assert state.SaveState(cas).state == first
    patch = pb.PatchStateRequest(
        agent_id="retry", patch_json=b'{"b":1}', expected_version=2, request_id="r-3"
    )
    patched = state.PatchState(patch).state
    assert state.PatchState(patch).state == patched
    assert versions(state, "retry") == [3, 2, 1]


# -- documents ------------------------------------------------------------------------------
EXACT = [
    b'{"big":123456789012345678901234567890,"neg":-9007199254740993,"edge":9007199254740993}',
    b'{"f":0.1,"g":1e-7,"h":1.5E+300,"i":-0.0,"j":1.0,"k":2.50}',
    '{"emoji":"🤖🧠","cjk":"状态","accents":"é"}'.encode(),
    b'{"escaped":"\\ud83e\\udd16","lone":"\\udc00","ctl":"\\u0000\\n"}',
    b'  {\n  "spaced" :\t[ 1 , 2 ],"dup":1,"dup":2 }\n',
]


@pytest.mark.parametrize("raw", EXACT, ids=["ints", "floats", "unicode", "escapes", "spacing"])
def test_documents_round_trip_byte_for_byte(
    state: StateStub, agents: AgentStub, raw: bytes
) -> None:
    create(agents, "exact")
    written = save(state, "exact", raw)
    assert written.size_bytes == len(raw)
    assert get(state, "exact").document_json == raw
    assert get(state, "exact", version=written.version).document_json == raw
    listed = state.ListStateVersions(
        pb.ListStateVersionsRequest(agent_id="exact", include_documents=True)
    )
    assert listed.versions[0].document_json == raw


def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def test_invalid_documents_are_refused_with_field_violations(
    state: StateStub, agents: AgentStub
) -> None:
    create(agents, "strict")
    oversize = b'{"a":"' + b"x" * MAX_BYTES + b'"}'
    cases = [
        (b"", "is required"),
        (b"not json", "valid JSON"),
        (b"[1,2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b'{"a":NaN}', "valid JSON"),
        (b'{"a":"\xff"}', "UTF-8"),
        (oversize, f"at most {MAX_BYTES} bytes"),
        (_nested(65), "nested at most 64"),
    ]
    for raw, message in cases:
        found = violations(
            fails(state.SaveState, pb.SaveStateRequest(agent_id="strict", document_json=raw))
        )
        assert message in found["document_json"], (raw[:20], found)
        found = violations(
            fails(state.PatchState, pb.PatchStateRequest(agent_id="strict", patch_json=raw))
        )
        assert message in found["patch_json"], (raw[:20], found)

    assert save(state, "strict", _nested(64)).version == 1
    found = violations(
        fails(
            state.SaveState,
            pb.SaveStateRequest(
                agent_id="bad id!", document_json=b"{}", expected_version=-1, schema_version=-2
            ),
        )
    )
    assert set(found) == {"agent_id", "expected_version", "schema_version"}
    assert versions(state, "strict") == [1]


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.builds(lambda a, s: a + s, st.text(max_size=4), st.sampled_from(["\ud800", "\udfff"]))
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=24,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_objects, ascii_only=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_any_json_object_round_trips_exactly(
    state: StateStub, agents: AgentStub, value: dict[str, Any], ascii_only: bool, indent: int | None
) -> None:
    try:
        create(agents, "prop")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    try:
        raw = text.encode()
    except UnicodeEncodeError:  # lone surrogates travel as \u escapes
        raw = json.dumps(value, ensure_ascii=True, indent=indent).encode()
    written = save(state, "prop", raw)
    read = get(state, "prop")
    assert read.document_json == raw
    assert read.version == written.version and read.size_bytes == len(raw)


# -- patches --------------------------------------------------------------------------------
def test_patch_state(state: StateStub, agents: AgentStub) -> None:
    create(agents, "patched")
    # A patch on no state applies to {}.
    first = state.PatchState(
        pb.PatchStateRequest(agent_id="patched", patch_json=b'{"a":{"b":"c"}}', expected_version=0)
    ).state
    assert (first.version, document(first)) == (1, {"a": {"b": "c"}})

    base = b'{"a":{"b":"c"},"keep":[1,2],"gone":true,"big":123456789012345678901234567890}'
    save(state, "patched", base, expected_version=1)
    reply = state.PatchState(
        pb.PatchStateRequest(
            agent_id="patched",
            patch_json=b'{"a":{"b":"d","c":null},"gone":null,"new":"\xc3\xa9"}',
            expected_version=2,
        )
    ).state
    expected = {"a": {"b": "d"}, "keep": [1, 2], "big": 123456789012345678901234567890, "new": "é"}
    assert reply.version == 3 and document(reply) == expected
    assert reply.size_bytes == len(reply.document_json)
    assert document(get(state, "patched")) == expected
    assert get(state, "patched").event_sequence == reply.event_sequence

    error = fails(
        state.PatchState,
        pb.PatchStateRequest(agent_id="patched", patch_json=b'{"x":1}', expected_version=2),
    )
    assert error.code() == grpc.StatusCode.ABORTED
    assert error_info(error).metadata["current_version"] == "3"

    # Lone surrogates survive a patch as escapes.
    save(state, "patched", b'{"s":"\\ud800"}')
    reply = state.PatchState(pb.PatchStateRequest(agent_id="patched", patch_json=b'{"t":1}')).state
    assert document(reply) == {"s": "\ud800", "t": 1}

    # The merged result is held to the size limit too.
    save(state, "patched", encode({"fill": "x" * (MAX_BYTES - 100)}))
    found = violations(
        fails(
            state.PatchState,
            pb.PatchStateRequest(agent_id="patched", patch_json=encode({"more": "y" * 200})),
        )
    )
    assert f"over the limit of {MAX_BYTES} bytes" in found["patch_json"]


# -- history --------------------------------------------------------------------------------
def test_retention_keeps_last_versions_and_checkpointed_ones(
    state: StateStub, agents: AgentStub, settings: Settings
) -> None:
    create(agents, "hist")
    for n in range(1, 4):
        save(state, "hist", {"n": n})
    checkpoint_row(settings.database_url, "hist", 2)
    for n in range(4, 13):
        save(state, "hist", {"n": n})
    assert versions(state, "hist") == [12, 11, 10, 9, 8, 2]
    assert document(get(state, "hist", version=2)) == {"n": 2}
    error = fails(state.GetState, pb.GetStateRequest(agent_id="hist", version=3))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert f"older than the {HISTORY} versions kept" in error.details()

    # Once no checkpoint pins it, the next sweep (every HISTORY-th version) removes it.
    checkpoint_row(settings.database_url, "hist", 2, remove=True)
    for n in range(13, 16):
        save(state, "hist", {"n": n})
    assert versions(state, "hist") == [15, 14, 13, 12, 11]


def test_list_versions_pages_newest_first(state: StateStub, agents: AgentStub) -> None:
    create(agents, "pages")
    for n in range(1, 5):
        save(state, "pages", {"n": n})
    first = state.ListStateVersions(pb.ListStateVersionsRequest(agent_id="pages", page_size=3))
    assert [v.version for v in first.versions] == [4, 3, 2]
    assert all(v.document_json == b"" and v.size_bytes > 0 for v in first.versions)
    assert first.next_page_token
    second = state.ListStateVersions(
        pb.ListStateVersionsRequest(agent_id="pages", page_size=3, page_token=first.next_page_token)
    )
    assert [v.version for v in second.versions] == [1] and second.next_page_token == ""

    with_docs = state.ListStateVersions(
        pb.ListStateVersionsRequest(agent_id="pages", include_documents=True)
    )
    assert [document(v) for v in with_docs.versions] == [{"n": n} for n in (4, 3, 2, 1)]
    found = violations(
        fails(
            state.ListStateVersions,
            pb.ListStateVersionsRequest(
                agent_id="pages", include_documents=True, page_token=first.next_page_token
            ),
        )
    )
    assert "page_token" in found


def test_clear_state_keeps_checkpointed_versions_and_never_reuses_numbers(
    state: StateStub, agents: AgentStub, settings: Settings
) -> None:
    create(agents, "wipe")
    for n in range(1, 4):
        save(state, "wipe", {"n": n})
    get(state, "wipe")  # cached
    checkpoint_row(settings.database_url, "wipe", 1)
    assert state.ClearState(pb.ClearStateRequest(agent_id="wipe")).deleted_versions == 2
    assert fails(state.GetState, pb.GetStateRequest(agent_id="wipe")).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    assert document(get(state, "wipe", version=1)) == {"n": 1}
    assert versions(state, "wipe") == [1]
    assert agents.GetAgent(lpb.GetAgentRequest(agent_id="wipe")).agent.state_version == 0

    again = save(state, "wipe", {"n": "again"}, expected_version=0)
    assert again.version == 4
    error = fails(
        state.SaveState,
        pb.SaveStateRequest(agent_id="wipe", document_json=b"{}", expected_version=0),
    )
    assert error_info(error).metadata["current_version"] == "4"


def test_every_write_is_an_event_without_the_document(
    state: StateStub, agents: AgentStub, settings: Settings
) -> None:
    create(agents, "logged")
    saved = save(state, "logged", {"secret": "s3cr3t"})
    patched = state.PatchState(pb.PatchStateRequest(agent_id="logged", patch_json=b'{"b":1}')).state
    state.ClearState(pb.ClearStateRequest(agent_id="logged"))
    engine = create_engine(settings.database_url)
    events = schema.events
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(events.c.sequence, events.c.type, events.c.data)
                .where(events.c.agent_id == "logged", events.c.type.like("state.%"))
                .order_by(events.c.sequence)
            ).all()
    finally:
        engine.dispose()
    assert [(r.type, json.loads(r.data)) for r in rows] == [
        ("state.saved", {"version": 1, "size": saved.size_bytes}),
        ("state.patched", {"version": 2, "size": patched.size_bytes}),
        ("state.cleared", {"version": 0, "size": 0, "deleted_versions": 2}),
    ]
    assert [r.sequence for r in rows[:2]] == [saved.event_sequence, patched.event_sequence]
    assert all(b"s3cr3t" not in r.data for r in rows)


# -- batch reads ----------------------------------------------------------------------------
def test_batch_get_states(state: StateStub, agents: AgentStub) -> None:
    for n in range(5):
        create(agents, f"b-{n}")
    for n in (0, 2, 4):
        save(state, f"b-{n}", {"n": n})
    get(state, "b-0")  # one cached, the others read from the database
    reply = state.BatchGetStates(
        pb.BatchGetStatesRequest(agent_ids=["b-4", "b-1", "nobody", "b-0", "b-2"])
    )
    assert [(s.agent_id, document(s)) for s in reply.states] == [
        ("b-4", {"n": 4}),
        ("b-0", {"n": 0}),
        ("b-2", {"n": 2}),
    ]
    assert list(reply.missing_agent_ids) == ["b-1", "nobody"]

    bad = [
        ([], "agent_ids"),
        (["b-0", "b-1", "b-0"], "agent_ids[2]"),
        (["b-0", "bad id"], "agent_ids[1]"),
        ([f"x-{n}" for n in range(1001)], "agent_ids"),
    ]
    for ids, field in bad:
        found = violations(fails(state.BatchGetStates, pb.BatchGetStatesRequest(agent_ids=ids)))
        assert field in found, found

    many = state.BatchGetStates(pb.BatchGetStatesRequest(agent_ids=[f"y-{n}" for n in range(1000)]))
    assert len(many.missing_agent_ids) == 1000


# -- schema migrations ------------------------------------------------------------------------
def test_schema_migrations_on_read_and_in_bulk(state: StateStub, agents: AgentStub) -> None:
    stored = {
        "c-1": (1, {"count": 1}),
        "c-2": (2, {"total": 2}),
        "c-3": (3, {"total": 3, "unit": "kg"}),
        "c-5": (1, {"count": 5}),
        "c-6": (1, {"count": 6}),
    }
    for agent_id in ("c-1", "c-2", "c-3", "c-4", "c-5", "c-6"):
        create(agents, agent_id, type="counter")
    for agent_id, (schema_version, doc) in stored.items():
        save(state, agent_id, doc, schema_version=schema_version)
    agents.TerminateAgent(lpb.TerminateAgentRequest(agent_id="c-6"))
    create(agents, "o-1", type="other")
    save(state, "o-1", {"count": 1})

    # Upgraded on read, not written back.
    read = get(state, "c-1")
    assert (read.version, read.schema_version) == (1, 3)
    assert document(read) == {"total": 1, "unit": "items"}
    assert document(get(state, "c-1")) == {"total": 1, "unit": "items"}  # cached upgraded
    assert document(get(state, "c-2", version=1)) == {"total": 2, "unit": "items"}
    batch = state.BatchGetStates(pb.BatchGetStatesRequest(agent_ids=["c-5", "c-3"]))
    assert [(s.schema_version, document(s)) for s in batch.states] == [
        (3, {"total": 5, "unit": "items"}),
        (3, {"total": 3, "unit": "kg"}),
    ]
    history = state.ListStateVersions(
        pb.ListStateVersionsRequest(agent_id="c-1", include_documents=True)
    )
    assert [(v.schema_version, document(v)) for v in history.versions] == [(1, {"count": 1})]
    other = get(state, "o-1")
    assert (other.schema_version, document(other)) == (1, {"count": 1})

    # A patch applies to the upgraded document.
    patched = state.PatchState(pb.PatchStateRequest(agent_id="c-5", patch_json=b'{"unit":"m"}'))
    assert (patched.state.schema_version, document(patched.state)) == (3, {"total": 5, "unit": "m"})
    save(state, "c-5", {"count": 5}, schema_version=1)  # back to an old shape

    def migrate(**fields: Any) -> pb.MigrateStatesResponse:
        return state.MigrateStates(pb.MigrateStatesRequest(agent_type="counter", **fields))

    dry = migrate(dry_run=True)
    assert (dry.migrated, dry.up_to_date, dry.remaining, dry.target_schema_version) == (4, 1, 0, 3)
    assert dry.next_page_token == ""
    assert get(state, "c-1").version == 1  # nothing written

    pages = []
    token = ""
    while True:
        page = migrate(page_size=2, page_token=token)
        pages.append((page.migrated, page.up_to_date, page.remaining))
        token = page.next_page_token
        if not token:
            break
    assert pages == [(2, 0, 4), (0, 1, 2), (2, 0, 0)]  # c-1 c-2 | c-3 c-4 | c-5 c-6

    newest = state.ListStateVersions(
        pb.ListStateVersionsRequest(agent_id="c-1", include_documents=True)
    )
    assert [(v.version, v.schema_version) for v in newest.versions] == [(2, 3), (1, 1)]
    assert document(newest.versions[0]) == {"total": 1, "unit": "items"}
    assert get(state, "c-6").schema_version == 3  # terminated agents are upgraded too

    again = migrate()
    assert (again.migrated, again.up_to_date, again.remaining) == (0, 5, 0)
    assert get(state, "c-1").version == 2
    untouched = state.MigrateStates(pb.MigrateStatesRequest(agent_type="other"))
    assert (untouched.migrated, untouched.up_to_date, untouched.target_schema_version) == (0, 1, 1)
    assert "agent_type" in violations(fails(state.MigrateStates, pb.MigrateStatesRequest()))


def test_a_failing_migration_is_a_failed_precondition_on_read(
    state: StateStub, agents: AgentStub
) -> None:
    create(agents, "old-1", type="broken")
    save(state, "old-1", {"a": 1}, schema_version=1)
    error = fails(state.GetState, pb.GetStateRequest(agent_id="old-1"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "STATE_MIGRATION_FAILED"
    assert "'broken'" in error.details() and "old-1" in error.details()


def test_migrate_states_reports_the_states_it_cannot_upgrade_and_upgrades_the_rest(
    state: StateStub, agents: AgentStub
) -> None:
    for agent_id, doc in [("p-1", {"n": 1}), ("p-2", {"bad": True}), ("p-3", {"n": 3})]:
        create(agents, agent_id, type="picky")
        save(state, agent_id, doc, schema_version=1)
    page = state.MigrateStates(pb.MigrateStatesRequest(agent_type="picky", page_size=2))
    assert (page.migrated, page.up_to_date, page.remaining) == (1, 0, 1)
    [failure] = page.failures
    assert (failure.agent_id, failure.from_schema_version) == ("p-2", 1)
    assert failure.message == "ValueError: this document is marked bad"
    rest = state.MigrateStates(
        pb.MigrateStatesRequest(agent_type="picky", page_token=page.next_page_token)
    )
    assert (rest.migrated, list(rest.failures), rest.next_page_token) == (1, [], "")
    assert document(get(state, "p-3")) == {"n": 3, "checked": True}
    bad = state.ListStateVersions(pb.ListStateVersionsRequest(agent_id="p-2"))
    assert [(v.version, v.schema_version) for v in bad.versions] == [(1, 1)]  # left as it was
    again = state.MigrateStates(pb.MigrateStatesRequest(agent_type="picky"))
    assert (again.migrated, again.up_to_date) == (0, 2)
    assert [f.agent_id for f in again.failures] == ["p-2"]  # still failing, still reported


def test_migrate_states_lists_every_kind_of_failed_upgrade_and_keeps_serving(
    state: StateStub, agents: AgentStub
) -> None:
    cases = {"q-set": "set", "q-exit": "exit", "q-grow": "grow", "q-raise": True}
    for agent_id, bad in [("q-good", False), *cases.items()]:
        create(agents, agent_id, type="picky")
        save(state, agent_id, {"bad": bad}, schema_version=1)
    dry = state.MigrateStates(pb.MigrateStatesRequest(agent_type="picky", dry_run=True))
    assert dry.migrated == 1 and sorted(f.agent_id for f in dry.failures) == sorted(cases)
    assert get(state, "q-good").version == 1  # a dry run writes nothing
    page = state.MigrateStates(pb.MigrateStatesRequest(agent_type="picky"))
    assert (page.migrated, page.up_to_date, page.remaining) == (1, 0, 0)
    messages = {f.agent_id: f.message for f in page.failures}
    assert sorted(messages) == sorted(cases)
    assert "not JSON" in messages["q-set"] and "SystemExit" in messages["q-exit"]
    assert "over the limit" in messages["q-grow"]
    assert messages["q-raise"] == "ValueError: this document is marked bad"
    assert document(get(state, "q-good")) == {"bad": False, "checked": True}
    for agent_id in cases:  # each left as it was
        versions = state.ListStateVersions(pb.ListStateVersionsRequest(agent_id=agent_id))
        assert [(v.version, v.schema_version) for v in versions.versions] == [(1, 1)]


# -- the cache ---------------------------------------------------------------------------------
def test_hot_reads_on_sqlite_do_not_touch_the_database(
    server: ServerThread, state: StateStub, agents: AgentStub, settings: Settings
) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("on PostgreSQL every read probes the agent row")
    create(agents, "hot")
    save(state, "hot", {"n": 1})
    assert server.server is not None and server.server.db is not None
    db = server.server.db

    async def no_reads(fn: Any) -> Any:
        raise AssertionError("a hot GetState read the database")

    db.read = no_reads  # type: ignore[method-assign]
    try:
        for _ in range(20):
            assert document(get(state, "hot")) == {"n": 1}
        save(state, "hot", {"n": 2})  # the writer refreshes the cache after commit
        assert document(get(state, "hot")) == {"n": 2}
    finally:
        del db.read


def test_deleting_an_agent_drops_its_cached_state(state: StateStub, agents: AgentStub) -> None:
    create(agents, "reborn")
    save(state, "reborn", {"life": 1})
    assert document(get(state, "reborn")) == {"life": 1}
    agents.TerminateAgent(lpb.TerminateAgentRequest(agent_id="reborn"))
    agents.DeleteAgent(lpb.DeleteAgentRequest(agent_id="reborn"))
    create(agents, "reborn")
    assert fails(state.GetState, pb.GetStateRequest(agent_id="reborn")).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    again = save(state, "reborn", {"life": 2})
    assert again.version == 1  # a new agent: numbering starts over
    assert document(get(state, "reborn")) == {"life": 2}


def test_a_second_server_on_the_same_sqlite_file_is_refused(
    server: ServerThread, state: StateStub, agents: AgentStub, settings: Settings
) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL serves many replicas")
    create(agents, "solo")
    save(state, "solo", {"n": 1})
    other = ServerThread(settings)
    try:
        with pytest.raises(DatabaseInUse, match="another Stateward server"):
            other.start()
    finally:
        other.close()
    server.restart()  # the lock is released on stop and taken again on start
    with grpc.insecure_channel(server.target) as channel:
        assert document(get(StateStub(channel), "solo")) == {"n": 1}


@pytest.mark.postgres
def test_cache_is_coherent_across_postgres_replicas(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    shared = Settings(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        database_url=postgres.create_database(),
        grace_period=0.5,
        log_level="WARNING",
    )
    first, second = ServerThread(shared).start(), ServerThread(shared).start()
    try:
        with grpc.insecure_channel(first.target) as a, grpc.insecure_channel(second.target) as b:
            via_a, via_b = StateStub(a), StateStub(b)
            create(AgentStub(a), "shared")
            save(via_a, "shared", {"n": 0})
            assert second.server is not None
            cache = second.server.deps.extras["state_cache"]  # type: ignore[union-attr]
            for n in range(1, 21):
                assert document(get(via_b, "shared")) == {"n": n - 1}
                hits = cache.hits  # type: ignore[attr-defined]
                assert document(get(via_b, "shared")) == {"n": n - 1}
                assert cache.hits == hits + 1  # type: ignore[attr-defined]  # a probed hit
                if n % 2:
                    save(via_a, "shared", {"n": n})
                else:
                    via_a.PatchState(
                        pb.PatchStateRequest(agent_id="shared", patch_json=encode({"n": n}))
                    )
                # The very next read through the other replica sees the write.
                assert document(get(via_b, "shared")) == {"n": n}

            via_a.ClearState(pb.ClearStateRequest(agent_id="shared"))
            assert fails(via_b.GetState, pb.GetStateRequest(agent_id="shared")).code() == (
                grpc.StatusCode.NOT_FOUND
            )
            save(via_a, "shared", {"n": "after clear"})
            assert document(get(via_b, "shared")) == {"n": "after clear"}

            # Same id, new agent, same version number: the cache must tell them apart.
            lifecycle = AgentStub(a)
            lifecycle.TerminateAgent(lpb.TerminateAgentRequest(agent_id="shared"))
            lifecycle.DeleteAgent(lpb.DeleteAgentRequest(agent_id="shared"))
            create(lifecycle, "shared")
            save(via_a, "shared", {"n": "first"})
            assert document(get(via_b, "shared")) == {"n": "first"}
            lifecycle.TerminateAgent(lpb.TerminateAgentRequest(agent_id="shared"))
            lifecycle.DeleteAgent(lpb.DeleteAgentRequest(agent_id="shared"))
            create(lifecycle, "shared")
            save(via_a, "shared", {"n": "second"})
            assert document(get(via_b, "shared")) == {"n": "second"}
    finally:
        first.close()
        second.close()


# -- the lost-update test -----------------------------------------------------------------------
CLIENTS = 32
INCREMENTS = 50


async def _increment(target: str, agent_id: str, rng: random.Random) -> None:
    """The optimistic loop: read, add one, compare-and-set; on a conflict back off and retry.

    Full-jitter exponential backoff with a high cap: losers spread out while the client
    that just won (and holds the freshest version) goes again at once.
    """
    async with grpc.aio.insecure_channel(target) as channel:
        stub = StateStub(channel)
        for _ in range(INCREMENTS):
            attempt = 0
            while True:
                current = (await stub.GetState(pb.GetStateRequest(agent_id=agent_id))).state
                value = json.loads(current.document_json)["counter"]
                try:
                    await stub.SaveState(
                        pb.SaveStateRequest(
                            agent_id=agent_id,
                            document_json=encode({"counter": value + 1}),
                            expected_version=current.version,
                        )
                    )
                    break
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.ABORTED:
                        raise
                    attempt += 1
                    await asyncio.sleep(rng.uniform(0, min(1.0, 0.005 * 2**attempt)))


@pytest.mark.slow
async def test_no_lost_updates_under_concurrent_compare_and_set(settings: Settings) -> None:
    """32 clients x 50 increments of one counter: exactly 1600, and exactly 1600 versions.

    SQLite runs one server (synchronous=NORMAL: this is about atomicity, not fsync);
    PostgreSQL runs two replicas on one database, the clients alternating between them.
    """
    if settings.database_url.startswith("sqlite"):
        replicas = [ServerThread(replace(settings, sqlite_synchronous="NORMAL")).start()]
    else:
        replicas = [ServerThread(settings).start(), ServerThread(settings).start()]
    try:
        with grpc.insecure_channel(replicas[0].target) as channel:
            create(AgentStub(channel), "counter")
            start = save(StateStub(channel), "counter", {"counter": 0}).version
        seeds = random.Random(7)
        await asyncio.gather(
            *(
                _increment(
                    replicas[n % len(replicas)].target, "counter", random.Random(seeds.random())
                )
                for n in range(CLIENTS)
            )
        )
        for replica in replicas:
            with grpc.insecure_channel(replica.target) as channel:
                final = get(StateStub(channel), "counter")
                assert document(final) == {"counter": CLIENTS * INCREMENTS}
                assert final.version == start + CLIENTS * INCREMENTS
                assert versions(StateStub(channel), "counter") == list(
                    range(final.version, final.version - HISTORY, -1)
                )
    finally:
        for replica in replicas:
            replica.close()


def test_schema_version_zero_means_the_newest_shape_of_the_type(
    state: StateStub, agents: AgentStub
) -> None:
    create(agents, "fresh-counter", type="counter")
    saved = save(state, "fresh-counter", {"total": 3, "unit": "items"})
    assert saved.schema_version == 3
    read = get(state, "fresh-counter")
    assert read.schema_version == 3 and document(read) == {"total": 3, "unit": "items"}
