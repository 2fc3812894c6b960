"""``subscribe``: one unbroken stream of events across disconnects and server restarts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from stateward.client import AsyncClient, Backoff, Client, Event, InvalidArgument, UsageError
from tests.client.conftest import SQLITE_ONLY, async_twin, wait_until
from tests.support.server import ServerThread

# Reconnect quickly after a restart (gRPC's own default waits a second or more).
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50)]
QUICK = Backoff(initial=0.02, maximum=0.2)


def connect(server: ServerThread) -> Client:
    return Client.connect(server.target, timeout=10, channel_options=FAST_RECONNECT)


class Collector:
    """Runs ``subscribe`` in a thread and keeps what it yields."""

    def __init__(self, events: Iterator[Event]) -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._source = events
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self._source:
                self.events.append(event)
        except BaseException as exc:
            self.error = exc

    def wait_for(self, count: int) -> None:
        wait_until(lambda: len(self.events) >= count or self.error, what=f"{count} events")
        assert self.error is None, self.error


def sequences(events: list[Any]) -> list[int]:
    return [e.sequence for e in events]


@SQLITE_ONLY
def test_resumes_across_server_restarts_without_gaps_or_repeats(server: ServerThread) -> None:
    writer = connect(server)
    reader = connect(server)
    try:
        seen = Collector(reader.subscribe(reconnect=QUICK))
        for n in range(5):
            writer.create_agent(f"a{n}", "planner")
        seen.wait_for(5)
        for round_ in range(2):
            server.restart()
            for n in range(5):
                writer.create_agent(f"r{round_}-{n}", "planner")
            seen.wait_for(10 + 5 * round_)
        log = list(writer.iter_events())
        assert len(log) == 15
        assert sequences(seen.events) == sequences(log) == list(range(1, 16))
        assert [e.agent_id for e in seen.events] == [e.agent_id for e in log]
    finally:
        reader.close()
        writer.close()
    seen.thread.join(10)
    assert not seen.thread.is_alive()  # closing the client ended the iteration
    assert seen.error is None


@SQLITE_ONLY
def test_waits_out_a_server_that_is_down(server: ServerThread) -> None:
    with connect(server) as client:
        client.create_agent("early", "planner")
        server.stop()
        seen = Collector(client.subscribe(reconnect=QUICK))  # UNAVAILABLE until it is back
        threading.Timer(0.3, server.start).start()
        seen.wait_for(1)
        client.create_agent("late", "planner")
        seen.wait_for(2)
        assert [e.agent_id for e in seen.events] == ["early", "late"]


@SQLITE_ONLY
def test_async_subscribe_resumes_across_a_restart(server: ServerThread) -> None:
    async def main() -> list[int]:
        async with AsyncClient.connect(server.target, channel_options=FAST_RECONNECT) as client:
            await client.create_agent("x0", "planner")
            got: list[int] = []
            async for event in client.subscribe(reconnect=QUICK):
                got.append(event.sequence)
                if len(got) == 1:
                    await asyncio.to_thread(server.restart)
                    await client.create_agent("x1", "planner")
                    await client.create_agent("x2", "planner")
                if len(got) == 3:
                    break
            return got

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [1, 2, 3]


def test_filters(live: Client) -> None:
    live.create_agent("b1", "planner")
    live.create_agent("other", "planner")
    live.initialize_agent("b1")
    filtered = live.subscribe(agent_id="b1", types=["agent.transitioned"])
    try:
        first = next(filtered)
        assert (first.agent_id, first.type) == ("b1", "agent.transitioned")
        live.initialize_agent("other")
        live.activate_agent("b1")
        assert next(filtered).data["to"] == "ACTIVE"
    finally:
        filtered.close()


def test_from_head_skips_the_history(live: Client) -> None:
    live.create_agent("old", "planner")
    seen = Collector(live.subscribe(from_head=True))  # the stream opens in its thread
    pokes = iter(range(1000))

    def poke() -> list[Event]:
        live.create_agent(f"new-{next(pokes)}", "planner")
        return seen.events

    wait_until(poke, what="a live event")
    assert seen.events[0].agent_id.startswith("new-")
    assert seen.events[0].sequence > 1


def test_a_bad_filter_is_raised_not_retried(live: Client) -> None:
    with pytest.raises(InvalidArgument):
        next(live.subscribe(types=["not a type!"]))
    with pytest.raises(UsageError):
        live.subscribe(after_sequence=3, from_head=True)


def test_async_subscribe_filters(live: Client) -> None:
    live.create_agent("d1", "planner")
    live.create_agent("d2", "planner")

    async def main() -> list[str]:
        async with async_twin(live) as client:
            stream = client.subscribe(agent_id="d2")
            try:
                return [(await anext(stream)).agent_id]
            finally:
                await stream.aclose()

    assert asyncio.run(main()) == ["d2"]
