"""Event rows as the writer stores them: every column round-trips, whatever is NULL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from stateward.storage import (
    Database,
    EventDraft,
    WriteContext,
    event_packs,
    expand,
    migrate,
    schema,
)
from stateward.storage import events as event_log
from stateward.storage.events import EventFilter
from stateward.storage.records import EventRecord


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    migrate.upgrade(database.write_engine)
    database.start()
    yield database
    database.close()


def drafts(namespace: str, now: int) -> list[EventDraft]:
    """One draft per combination of NULL columns, interleaved, with distinct values."""
    out = []
    for i, (agent, run, task, at) in enumerate(itertools.product((None, 1), repeat=4)):
        out.append(
            EventDraft(
                namespace,
                0,
                f"kind.{i}",
                b'{"i": %d, "s": "\xc3\xa9"}' % i,
                now,
                agent and f"agent-{i}",
                run and f"run-{i}",
                task and f"task-{i}",
                at and -62_135_596_800_000_000 + i,  # near 0001-01-01: any int64 is kept
            )
        )
    return out


async def test_rows_round_trip_in_one_batch_over_two_namespaces(db: Database) -> None:
    def write(ctx: WriteContext) -> tuple[list[EventDraft], list[EventDraft]]:
        first, second = drafts("ns-a", ctx.now), drafts("ns-b", ctx.now)
        assert ctx.emit_many("ns-a", first[:5]) == 1
        ctx.emit("ns-b", "single", b"{}")  # emit and emit_many share the counter
        assert ctx.emit_many("ns-b", second) == 2
        assert ctx.emit_many("ns-a", first[5:]) == 6
        return first, second

    first, second = await db.write(write)
    for namespace, expected, after in (("ns-a", first, 0), ("ns-b", second, 1)):
        stored = db.read_sync(lambda c, n=namespace: event_log.read_range(c, n, 0, 100))
        assert [r.sequence for r in stored] == list(range(1, len(expected) + after + 1))
        got = [
            (r.sequence, r.type, r.data, r.created_at, r.agent_id, r.run_id)
            + (r.task_run_id, r.client_time)
            for r in stored[after:]
        ]
        assert got == [
            (d.sequence, d.type, d.data, d.created_at, d.agent_id, d.run_id)
            + (d.task_run_id, d.client_time)
            for d in expected
        ]
        assert all(isinstance(r.data, bytes) for r in stored)
        head = db.read_sync(lambda c, n=namespace: event_log.head(c, n))
        assert head == stored[-1].sequence


async def test_a_large_batch_is_stored_whole_and_in_order(db: Database) -> None:
    def write(ctx: WriteContext) -> int:
        batch = [
            EventDraft("ns", 0, "tick", b"{}", ctx.now, "a", f"run-{i % 3}", None, None)
            for i in range(7000)  # several INSERT chunks
        ]
        return ctx.emit_many("ns", batch)

    assert await db.write(write) == 1
    stored = db.read_sync(lambda c: event_log.read_range(c, "ns", 0, 10_000))
    assert [r.sequence for r in stored] == list(range(1, 7001))
    assert [r.run_id for r in stored[:4]] == ["run-0", "run-1", "run-2", "run-0"]


# -- packed rows ----------------------------------------------------------------------------------
def _mixed(now: int) -> list[EventDraft]:
    """Runs of one write: 5 of run-1 (types and client times vary), a single of run-2,
    3 of run-2's task, 2 of run-1 again (one type, no client time)."""

    def ev(kind: str, run: str, task: str | None = None, at: int | None = None) -> EventDraft:
        return EventDraft(
            "ns", 0, kind, b'{"k": "%s"}' % kind.encode(), now, "agent", run, task, at
        )

    return [
        ev("a", "run-1", at=-5),
        ev("b", "run-1"),
        ev("a", "run-1", at=2**63 - 1),
        ev("c", "run-1"),
        ev("a", "run-1"),
        ev("a", "run-2"),
        ev("t", "run-2", "task-1"),
        ev("t", "run-2", "task-1"),
        ev("t", "run-2", "task-1"),
        ev("z", "run-1"),
        ev("z", "run-1"),
    ]


def _seen(records: list[EventRecord]) -> list[tuple[int, str, bytes, str | None, int | None]]:
    return [(r.sequence, r.type, r.data, r.task_run_id, r.client_time) for r in records]


async def test_runs_of_one_write_are_stored_packed_and_read_back_per_event(db: Database) -> None:
    def write(ctx: WriteContext) -> list[EventDraft]:
        ctx.emit("ns", "before", b"{}", agent_id="agent")
        batch = _mixed(ctx.now)
        ctx.emit_many("ns", batch)
        ctx.emit("ns", "after", b"{}", agent_id="agent")
        return batch

    batch = await db.write(write)
    expected = [(1, "before", b"{}", None, None)]
    expected += [(d.sequence, d.type, d.data, d.task_run_id, d.client_time) for d in batch]
    expected += [(13, "after", b"{}", None, None)]
    assert _seen(db.read_sync(lambda c: event_log.read_range(c, "ns", 0, 100))) == expected
    rows = db.read_sync(
        lambda c: c.execute(select(schema.events.c.span).order_by(schema.events.c.sequence))
    ).scalars()
    assert list(rows) == [1, 5, 1, 3, 2, 1]  # a single event stays a plain row

    def page(flt: EventFilter, **bounds: Any) -> list[int]:
        found = db.read_sync(lambda c: event_log.list_page(c, "ns", flt, **bounds))
        return [r.sequence for r in found]

    everything = EventFilter()
    assert page(everything, after=3, limit=100) == list(range(4, 14))  # starts inside a row
    assert page(everything, after=0, up_to=4, limit=100) == [1, 2, 3, 4]  # ends inside one
    assert page(everything, after=2, up_to=9, limit=3) == [3, 4, 5]
    assert page(EventFilter(types=frozenset({"a"})), after=0, limit=100) == [2, 4, 6, 7]
    assert page(EventFilter(types=frozenset({"a", "z"})), after=4, limit=2) == [6, 7]
    assert page(EventFilter(types=frozenset({"t"})), after=0, limit=100) == [8, 9, 10]
    assert page(EventFilter(run_id="run-1"), after=0, limit=100) == [2, 3, 4, 5, 6, 11, 12]
    assert page(EventFilter(task_run_id="task-1"), after=8, limit=100) == [9, 10]
    assert page(EventFilter(agent_id="agent"), after=0, limit=100) == list(range(1, 14))
    # Paging one event at a time walks every row, packed or not, exactly once.
    walked, after = [], 0
    while batch_ := page(EventFilter(types=frozenset({"a", "t", "after"})), after=after, limit=1):
        walked += batch_
        after = batch_[-1]
    assert walked == [2, 4, 6, 7, 8, 9, 10, 13]
    top, position = db.read_sync(lambda c: event_log.catch_up(c, "ns", everything, 10, 100))
    assert [r.sequence for r in top] == [11, 12, 13] and position == 13


async def test_a_long_run_is_split_into_rows_of_at_most_max_span(db: Database) -> None:
    total = 2 * event_packs.MAX_SPAN + 7

    def write(ctx: WriteContext) -> int:
        batch = [
            EventDraft("ns", 0, "tick", b'{"i": %d}' % i, ctx.now, "a", "run", None, None)
            for i in range(total)
        ]
        return ctx.emit_many("ns", batch)

    assert await db.write(write) == 1
    spans = db.read_sync(
        lambda c: c.execute(select(schema.events.c.span).order_by(schema.events.c.sequence))
    ).scalars()
    assert list(spans) == [event_packs.MAX_SPAN, event_packs.MAX_SPAN, 7]
    stored = db.read_sync(lambda c: event_log.read_range(c, "ns", 5, total - 3))
    assert [r.data for r in stored] == [b'{"i": %d}' % i for i in range(5, total - 3)]


async def test_emit_run_stores_columns_packed_and_listeners_can_expand_them(db: Database) -> None:
    committed: list[list[EventDraft]] = []
    db.on_commit(committed.append)
    total = event_packs.MAX_SPAN + 2
    types = [f"t{i % 3}" for i in range(total)]
    datas = [b'{"i": %d}' % i for i in range(total)]
    times = [None] * (total - 1) + [7]

    def write(ctx: WriteContext) -> tuple[int, int]:
        ctx.emit("ns", "first", b"{}")
        many = ctx.emit_run("ns", types, datas, times, agent_id="a", run_id="r")
        one = ctx.emit_run("ns", ["solo"], [b"{}"], [3], run_id="r")
        return many, one

    assert await db.write(write) == (2, total + 2)
    rows = committed[0]
    assert [(row.sequence, row.span) for row in rows] == [
        (1, 1),
        (event_packs.MAX_SPAN + 1, event_packs.MAX_SPAN),
        (total + 1, 2),
        (total + 2, 1),
    ]
    expected = [(1, "first", b"{}", None, None)]
    expected += [(i + 2, types[i], datas[i], "r", times[i]) for i in range(total)]
    expected += [(total + 2, "solo", b"{}", "r", 3)]
    expanded = expand(rows)
    assert [(d.sequence, d.type, d.data, d.run_id, d.client_time) for d in expanded] == expected
    stored = db.read_sync(lambda c: event_log.read_range(c, "ns", 0, total + 2))
    assert [(r.sequence, r.type, r.data, r.run_id, r.client_time) for r in stored] == expected
    assert {r.agent_id for r in stored[1:-1]} == {"a"} and stored[-1].agent_id is None
