"""Reading the event log, and telling other replicas that it grew.

Events are written by ``Database`` (see database.py: sequences follow commit order,
gap-free). Here: the namespace head, filtered keyset pages in sequence order, and
PostgreSQL LISTEN/NOTIFY so a replica learns about commits made by another one.

A catch-up read takes the head first and then the events up to it: every event at or
below a committed head is itself committed (the counter row and the events commit
together), so the page is complete up to the head even under READ COMMITTED.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.engine import make_url

from stateward.storage import event_packs, schema
from stateward.storage.records import EventRecord
from stateward.storage.sql import Sql, run

e = schema.events
n = schema.namespaces
log = logging.getLogger(__name__)

CHANNEL = "stateward_events"
_MIN_ROWS = 16  # rows a page query asks for at least (a packed row may match no event)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Filters shared by listing and subscribing; empty fields match everything."""

    agent_id: str = ""
    run_id: str = ""
    task_run_id: str = ""
    types: frozenset[str] = field(default_factory=frozenset)

    def matches(self, event: Any) -> bool:
        """Whether an event (an EventRecord or an EventDraft) passes the filter."""
        return (
            (not self.agent_id or event.agent_id == self.agent_id)
            and (not self.run_id or event.run_id == self.run_id)
            and (not self.task_run_id or event.task_run_id == self.task_run_id)
            and (not self.types or event.type in self.types)
        )

    @property
    def empty(self) -> bool:
        return not (self.agent_id or self.run_id or self.task_run_id or self.types)


def records_from_row(row: Any) -> list[EventRecord]:
    """The events a row holds: itself, or the run of events packed into it."""
    if row.span == 1:
        return [
            EventRecord(
                row.namespace,
                row.sequence,
                row.type,
                row.data,
                row.created_at,
                row.agent_id,
                row.run_id,
                row.task_run_id,
                row.client_time,
            )
        ]
    return [EventRecord(*fields) for fields in event_packs.events_of(row)]


def head(conn: Connection, namespace: str) -> int:
    """The namespace's newest committed sequence (0 before the first event)."""
    value = conn.execute(select(n.c.event_head).where(n.c.namespace == namespace)).scalar()
    return int(value or 0)


def all_heads(conn: Connection) -> dict[str, int]:
    """Every namespace's newest committed sequence (for the head gauge at start-up)."""
    rows = conn.execute(select(n.c.namespace, n.c.event_head))
    return {namespace: int(head or 0) for namespace, head in rows}


def list_page(
    conn: Connection,
    namespace: str,
    flt: EventFilter,
    *,
    after: int,
    up_to: int | None = None,
    start: int | None = None,
    end: int | None = None,
    limit: int,
    budget: int | None = None,
) -> list[EventRecord]:
    """Matching events with ``after < sequence [<= up_to]`` in sequence order.

    Each single-column filter rides its (namespace, column, sequence) index. A packed row
    matches the column and time filters as a whole; types and bounds are checked per event,
    and rows are read until ``limit`` events match, their payloads reach ``budget`` bytes,
    or none are left.
    """
    query = select(e).where(e.c.namespace == namespace)
    if up_to is not None:
        query = query.where(*_starts_by(up_to))
    if flt.task_run_id:
        query = query.where(e.c.task_run_id == flt.task_run_id)
    if flt.run_id:
        query = query.where(e.c.run_id == flt.run_id)
    if flt.agent_id:
        query = query.where(e.c.agent_id == flt.agent_id)
    if flt.types:  # "": a packed row of mixed types
        query = query.where(e.c.type.in_(["", *sorted(flt.types)]))
    if start is not None:
        query = query.where(e.c.created_at >= start)
    if end is not None:
        query = query.where(e.c.created_at < end)
    if limit < 1:
        return []
    # Rows are read lazily (SQLite steps them one by one); a page of single events still
    # takes one query, and a type filter rows cannot apply takes few.
    query = query.order_by(e.c.sequence).limit(max(limit, _MIN_ROWS))
    out: list[EventRecord] = []
    position = after
    weight = 0
    while True:
        rows = 0
        with conn.execute(query.where(e.c.sequence > position)) as result:
            for row in result:
                rows += 1
                position = row.sequence
                for record in records_from_row(row):
                    if record.sequence <= after or (flt.types and record.type not in flt.types):
                        continue
                    if up_to is not None and record.sequence > up_to:
                        return out
                    out.append(record)
                    weight += len(record.data)
                    if len(out) == limit or (budget is not None and weight >= budget):
                        return out
        if rows < max(limit, _MIN_ROWS):
            return out


def _starts_by(up_to: int) -> tuple[Any, Any]:
    """Rows holding an event at or below ``up_to``: the first condition bounds the index
    range (a packed row ends at most MAX_SPAN - 1 events after its first), the second is
    exact. Committed heads never fall inside a row; other bounds may."""
    return e.c.sequence < up_to + event_packs.MAX_SPAN, e.c.sequence - e.c.span < up_to


def catch_up(
    conn: Connection, namespace: str, flt: EventFilter, after: int, limit: int, budget: int
) -> tuple[list[EventRecord], int, bool]:
    """Matching events after ``after`` (at most ``limit``, or as many as reach ``budget``
    payload bytes), the position reached, and whether that is the head.

    The position is the head when the page is not full (everything up to the head
    was seen), else the last event's sequence.
    """
    top = head(conn, namespace)
    if top <= after:
        return [], after, True
    records = list_page(conn, namespace, flt, after=after, up_to=top, limit=limit, budget=budget)
    if len(records) < limit and sum(len(r.data) for r in records) < budget:
        return records, top, True
    return records, records[-1].sequence, False


def read_range(conn: Connection, namespace: str, after: int, up_to: int) -> list[EventRecord]:
    """Every event with ``after < sequence <= up_to`` (committed, so none is missing)."""
    rows = conn.execute(
        select(e)
        .where(e.c.namespace == namespace, e.c.sequence > after, *_starts_by(up_to))
        .order_by(e.c.sequence)
    )
    out: list[EventRecord] = []
    for row in rows:
        for record in records_from_row(row):
            if record.sequence > up_to:
                return out
            if record.sequence > after:
                out.append(record)
    return out


# -- appending ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _owners_sql(table: str, columns: str, key: str, count: int) -> Sql:
    marks = ",".join("?" * count)
    return Sql(f"SELECT {columns} FROM {table} WHERE namespace = ? AND {key} IN ({marks})")


def owners(
    conn: Connection, namespace: str, run_ids: Sequence[str], task_run_ids: Sequence[str]
) -> tuple[dict[str, str | None], dict[str, tuple[str, str]]]:
    """Existing runs (run_id -> agent_id) and task runs (task_run_id -> (run_id, agent_id))
    among those given: one plain-SQL query per kind (AppendEvents' hot path)."""
    runs: dict[str, str | None] = {}
    tasks: dict[str, tuple[str, str]] = {}
    if task_run_ids:
        sql = _owners_sql(
            "task_runs", "task_run_id, run_id, agent_id", "task_run_id", len(task_run_ids)
        )
        for task_run_id, run_id, agent_id in run(conn, sql, (namespace, *task_run_ids)):
            tasks[task_run_id] = (run_id, agent_id)
    if run_ids:
        sql = _owners_sql("workflow_runs", "run_id, agent_id", "run_id", len(run_ids))
        for run_id, agent_id in run(conn, sql, (namespace, *run_ids)):
            runs[run_id] = agent_id
    return runs, tasks


# -- cross-replica notifications (PostgreSQL) -----------------------------------------------------
def libpq_url(sqlalchemy_url: str) -> str:
    """The psycopg connection string for a ``postgresql+psycopg://`` SQLAlchemy URL."""
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


class HeadNotifier:
    """Publishes namespace heads with NOTIFY and hands other replicas' heads to ``on_head``.

    ``publish(namespace, head)`` may be called from any thread; heads are coalesced so a
    burst of commits costs one NOTIFY per namespace per round trip. Notifications are
    hints: a lost one is repaired by the subscribers' periodic head check.
    """

    def __init__(self, url: str, sender: str, on_head: Callable[[str, int], None]) -> None:
        self.url = libpq_url(url)
        self.sender = sender
        self.on_head = on_head
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False

    def publish(self, namespace: str, head: int) -> None:
        """Thread-safe: remember the newest head and wake the sender."""
        with self._lock:
            if self._pending.get(namespace, 0) < head:
                self._pending[namespace] = head
            loop = self._loop
            if loop is None or self._scheduled:
                return
            self._scheduled = True
        loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._scheduled = False
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self, on_connect: Callable[[], None]) -> None:
        """Listen and send until cancelled; ``on_connect`` runs after each (re)connect."""
        import psycopg

        self._wakeup = asyncio.Event()
        self._wakeup.set()  # heads published while disconnected go out first
        with self._lock:
            self._loop = asyncio.get_running_loop()
        try:
            async with AsyncExitStack() as connections:
                listen = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                connections.push_async_callback(listen.close)
                send = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                connections.push_async_callback(send.close)
                await listen.execute(f"LISTEN {CHANNEL}")
                on_connect()
                await _until_one_fails(self._receive(listen), self._send(send))
        finally:
            self._loop = None

    async def _receive(self, conn: Any) -> None:
        async with aclosing(conn.notifies()) as notes:  # closed here, not by the GC later
            async for note in notes:
                parsed = _parse(note.payload)
                if parsed is not None and parsed[0] != self.sender:
                    self.on_head(parsed[1], parsed[2])

    async def _send(self, conn: Any) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            with self._lock:
                pending, self._pending = self._pending, {}
            for namespace, value in pending.items():
                await conn.execute(
                    "SELECT pg_notify(%s, %s)", [CHANNEL, f"{self.sender} {namespace} {value}"]
                )


async def _until_one_fails(*jobs: Coroutine[Any, Any, None]) -> None:
    """Run ``jobs`` until one ends, then stop the others, and raise what ended it.

    Every job has stopped before this returns, so their connections can close: psycopg
    frees a closed connection's libpq handle at once, and a query still suspended on it
    resumes within 0.1 s (psycopg's wait interval) on freed memory. With ``gather`` the
    sender outlived a failed listener, and the server aborted with "realloc(): invalid
    pointer" when PostgreSQL went down. (Not a TaskGroup: on Python 3.11 it leaves its
    parent task marked as cancelling, which would taint the supervisor's restarts.)
    """
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise ConnectionError("a notification connection stopped without an error")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)


def _parse(payload: str) -> tuple[str, str, int] | None:
    parts = payload.split(" ")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


def heads(conn: Connection, namespaces: Sequence[str]) -> dict[str, int]:
    """Heads of several namespaces in one query."""
    if not namespaces:
        return {}
    rows = conn.execute(
        select(n.c.namespace, n.c.event_head).where(n.c.namespace.in_(list(namespaces)))
    )
    return {row.namespace: int(row.event_head) for row in rows}
