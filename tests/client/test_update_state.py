"""``update_state``: the optimistic read-modify-write loop, through the real server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pytest

from stateward.client import Backoff, Client, Conflict, NotFound, UsageError
from stateward.v1 import state_pb2
from tests.client.conftest import SQLITE_ONLY, async_twin
from tests.client.fakes import FakeServer, error_info, refuse
from tests.support.server import ServerThread

WRITERS = 32
INCREMENTS = 50


def increment(document: dict[str, Any]) -> None:
    document["n"] = document.get("n", 0) + 1


def test_starts_from_nothing_then_builds_on_the_latest(live: Client, agent: str) -> None:
    first = live.update_state(agent, increment)
    assert first.version == 1
    second = live.update_state(agent, lambda doc: {**doc, "seen": True})  # returning a new dict
    assert second.version == 2
    assert live.get_state(agent).document == {"n": 1, "seen": True}


def test_keeps_the_schema_version_it_read(live: Client) -> None:
    """Type ``counter`` has migrations 1 -> 2 -> 3: a read upgrades, the write keeps 3."""
    live.create_agent("c1", "counter")
    live.initialize_agent("c1")
    live.save_state("c1", {"count": 1}, schema_version=1)
    saved = live.update_state("c1", lambda doc: doc.update(total=doc["total"] + 1))
    assert saved.schema_version == 3
    assert live.get_state("c1").document == {"total": 2, "unit": "items"}
    # A state this call creates gets the schema version asked for.
    live.create_agent("c2", "counter")
    live.initialize_agent("c2")
    fresh = live.update_state("c2", lambda doc: {"total": 1, "unit": "items"}, schema_version=3)
    assert fresh.schema_version == 3
    assert live.get_state("c2").document == {"total": 1, "unit": "items"}


def test_retries_when_another_writer_wins(live: Client, agent: str) -> None:
    calls = 0

    def racing(document: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # someone else writes between our read and our write
            live.save_state(agent, {"n": 10})
        increment(document)

    saved = live.update_state(agent, racing)
    assert calls == 2
    assert saved.version == 2
    assert live.get_state(agent).document == {"n": 11}


def test_a_missing_agent_is_not_retried(live: Client) -> None:
    with pytest.raises(NotFound):
        live.update_state("ghost", increment)


def test_fn_must_return_a_dict_or_none(live: Client, agent: str) -> None:
    with pytest.raises(UsageError, match="must return a dict or None"):
        live.update_state(agent, lambda doc: [1, 2])  # type: ignore[arg-type,return-value]
    with pytest.raises(UsageError, match="max_attempts"):
        live.update_state(agent, increment, max_attempts=0)


def test_gives_up_after_max_attempts(fake: FakeServer) -> None:
    """Failure injection: a server where every compare-and-set loses."""
    fake.handlers["GetState"] = lambda request: state_pb2.GetStateResponse(
        state=state_pb2.StateVersion(agent_id="a1", version=4, document_json=b'{"n":1}')
    )

    def lose(request: Any) -> Any:
        raise refuse(
            grpc.StatusCode.ABORTED,
            "version conflict",
            error_info("VERSION_CONFLICT", current_version="5"),
        )

    fake.handlers["SaveState"] = lose
    quick = Backoff(initial=0.001, maximum=0.002)
    with Client.connect(fake.target, timeout=5) as client:
        with pytest.raises(Conflict) as caught:
            client.update_state("a1", increment, max_attempts=3, backoff=quick)
    assert caught.value.current_version == 5
    saves = fake.requests("SaveState")
    assert len(saves) == 3
    assert {s.expected_version for s in saves} == {4}
    assert len({s.request_id for s in saves}) == 3  # each attempt is a new write


def hammer(target: str, agent: str, writers: int, increments: int) -> None:
    """``writers`` threads, each with its own client, increment one counter
    ``increments`` times: the final count and the version advance by exactly that much."""
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer() -> None:
        try:
            with Client.connect(target, timeout=30) as client:
                start.wait()
                for _ in range(increments):
                    client.update_state(agent, increment, max_attempts=1000)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    with Client.connect(target) as client:
        state = client.get_state(agent)
    assert state.document == {"n": writers * increments}
    assert state.version == writers * increments


@pytest.fixture
def counter(server: ServerThread) -> str:
    with Client.connect(server.target) as client:
        client.create_agent("counter-1", "planner")
        client.initialize_agent("counter-1")
    return "counter-1"


@SQLITE_ONLY
@pytest.mark.slow
def test_no_lost_updates_with_32_writers_of_50_increments(
    server: ServerThread, counter: str
) -> None:
    """The issue's lost-update test, through the client. Its time is bound by the
    writers' collisions (each save that loses still costs the server a write), not by
    the client: PostgreSQL runs the smaller version below."""
    hammer(server.target, counter, WRITERS, INCREMENTS)


def test_no_lost_updates_on_each_database(server: ServerThread, counter: str) -> None:
    hammer(server.target, counter, 8, 10)


def test_async_update_state_under_contention(live: Client, agent: str) -> None:
    async def main() -> None:
        async with async_twin(live) as client:

            async def worker() -> None:
                for _ in range(10):
                    await client.update_state(agent, increment, max_attempts=200)

            await asyncio.gather(*(worker() for _ in range(8)))
            state = await client.get_state(agent)
            assert state.document == {"n": 80}
            assert state.version == 80

    asyncio.run(main())
