"""HeadNotifier's connection handling, with stand-in psycopg connections.

A psycopg connection closed while a query on it is suspended frees the libpq handle under
that query; when the query resumes the process can abort. So when one side of the notifier
fails, the other must have stopped before either connection closes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from stateward.storage.events import HeadNotifier


class StandInConnection:
    """Records, at close, whether a query was still suspended on the connection."""

    def __init__(self, sending: asyncio.Event, lost: asyncio.Event, log: list[str]) -> None:
        self.sending = sending
        self.lost = lost
        self.log = log
        self.suspended = 0

    async def execute(self, sql: str, params: Any = None) -> None:
        if sql.startswith("LISTEN"):
            return
        self.suspended += 1
        self.sending.set()
        try:
            await asyncio.Event().wait()  # the NOTIFY's answer never comes: the server is gone
        finally:
            self.suspended -= 1

    async def notifies(self) -> Any:
        await self.lost.wait()
        raise psycopg.OperationalError("consuming input failed: server closed the connection")
        yield  # an async generator, as psycopg's

    async def close(self) -> None:
        self.log.append("closed with a query suspended" if self.suspended else "closed idle")


async def test_a_lost_listen_connection_stops_the_sender_before_closing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sending, lost = asyncio.Event(), asyncio.Event()
    log: list[str] = []

    async def connect(*args: Any, **kwargs: Any) -> StandInConnection:
        return StandInConnection(sending, lost, log)

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    notifier = HeadNotifier("postgresql+psycopg://stand-in/db", "me", lambda ns, head: None)
    notifier.publish("default", 7)  # goes out as soon as the sender starts

    running = asyncio.create_task(notifier.run(on_connect=lambda: None))
    await sending.wait()  # the NOTIFY is in flight...
    lost.set()  # ...when the listening connection drops
    with pytest.raises(psycopg.OperationalError, match="server closed"):
        await asyncio.wait_for(running, timeout=10)

    assert log == ["closed idle", "closed idle"]
    assert running.cancelling() == 0  # the supervisor's task is fit to restart the notifier
    assert notifier._loop is None  # heads published from now on wait for the next connection


async def test_notifications_that_stop_without_an_error_still_reconnect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log: list[str] = []

    class Ending(StandInConnection):
        async def notifies(self) -> Any:
            return
            yield

    async def connect(*args: Any, **kwargs: Any) -> StandInConnection:
        return Ending(asyncio.Event(), asyncio.Event(), log)

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    notifier = HeadNotifier("postgresql+psycopg://stand-in/db", "me", lambda ns, head: None)
    with pytest.raises(ConnectionError, match="stopped"):  # the supervisor restarts on errors
        await asyncio.wait_for(notifier.run(on_connect=lambda: None), timeout=10)
    assert log == ["closed idle", "closed idle"]


async def test_a_failed_second_connect_closes_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    made: list[StandInConnection] = []

    async def connect(*args: Any, **kwargs: Any) -> StandInConnection:
        if made:
            raise psycopg.OperationalError("connection refused")
        made.append(StandInConnection(asyncio.Event(), asyncio.Event(), log))
        return made[0]

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    notifier = HeadNotifier("postgresql+psycopg://stand-in/db", "me", lambda ns, head: None)
    with pytest.raises(psycopg.OperationalError, match="refused"):
        await notifier.run(on_connect=lambda: None)
    assert log == ["closed idle"]
