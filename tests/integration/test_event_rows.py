"""Event rows as the writer stores them: every column round-trips, whatever is NULL."""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from stateward.storage import (
    Database,
    EventDraft,
    WriteContext,
    archive,
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
    top, position, at_head = db.read_sync(
        lambda c: event_log.catch_up(c, "ns", everything, 10, 100, 1 << 20)
    )
    assert [r.sequence for r in top] == [11, 12, 13] and (position, at_head) == (13, True)
    # A byte budget cuts the page like a full one: the position is its last event's.
    cut, position, at_head = db.read_sync(
        lambda c: event_log.catch_up(c, "ns", everything, 0, 100, 1)
    )
    assert [r.sequence for r in cut] == [1] and (position, at_head) == (1, False)


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


# -- a randomised model: packed or not, reads see exactly the per-event log --------------------
OWNERS = [(None, None, None), ("ag", "r1", None), ("ag", "r2", None), ("ag", "r2", "t1")]


def _random_job(rng: random.Random, ns: str) -> tuple[Callable[[WriteContext], None], list[Any]]:
    """A write of random events (some big enough to split rows) and the model's copy."""
    events = []
    for _ in range(rng.randrange(1, 40)):
        owners = rng.choice(OWNERS) if not events or rng.random() < 0.3 else events[-1][3]
        size = rng.choice([2, 30, 5000, 40_000])
        data = b'"%s"' % (b"x" * size)
        at = rng.choice([None, None, rng.randrange(-(10**15), 10**15)])
        events.append([rng.choice("abc"), data, at, owners])
    how = rng.choice(["many", "singles", "run"])
    fail = rng.random() < 0.2

    def job(ctx: WriteContext) -> None:
        if how == "run":
            owners = events[0][3]
            for event in events:
                event[3] = owners
            agent, run_id, task = owners
            columns = [[ev[i] for ev in events] for i in range(3)]
            ctx.emit_run(ns, *columns, agent_id=agent, run_id=run_id, task_run_id=task)
        elif how == "many":
            drafts = [EventDraft(ns, 0, t, d, ctx.now, *o, at) for t, d, at, o in events]
            ctx.emit_many(ns, drafts)
        else:
            for t, d, at, (agent, run_id, task) in events:
                ctx.emit(ns, t, d, agent_id=agent, run_id=run_id, task_run_id=task, client_time=at)
        if fail:
            raise ValueError("refused")

    return job, [] if fail else events


@pytest.mark.parametrize("seed", range(4))
async def test_reads_match_a_per_event_model(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    model: list[tuple[int, str, bytes, int | None, tuple[Any, ...]]] = []
    for _ in range(6):
        jobs = [_random_job(rng, "ns") for _ in range(rng.randrange(1, 5))]
        results = await asyncio.gather(*(db.write(job) for job, _ in jobs), return_exceptions=True)
        for (_, events), result in zip(jobs, results, strict=True):
            assert result is None if events else isinstance(result, ValueError)
            for t, d, at, owners in events:
                model.append((len(model) + 1, t, d, at, owners))

    def seen(records: list[EventRecord]) -> list[tuple[Any, ...]]:
        return [
            (r.sequence, r.type, r.data, r.client_time, (r.agent_id, r.run_id, r.task_run_id))
            for r in records
        ]

    top = len(model)
    assert seen(db.read_sync(lambda c: event_log.read_range(c, "ns", 0, top))) == model
    for _ in range(60):
        after, up_to = sorted(rng.randrange(0, top + 2) for _ in range(2))
        types = frozenset(rng.sample("abc", rng.randrange(0, 3)))
        owner = rng.choice(OWNERS[1:])
        flt = rng.choice(
            [EventFilter(types=types), EventFilter(agent_id="ag", types=types)]
            + [EventFilter(run_id=owner[1]), EventFilter(task_run_id="t1", types=types)]
        )
        limit = rng.choice([1, 2, 7, 50])
        bounded = rng.random() < 0.5

        page = functools.partial(
            event_log.list_page,
            namespace="ns",
            flt=flt,
            after=after,
            up_to=up_to if bounded else None,
            limit=limit,
        )
        expected = [
            m
            for m in model
            if after < m[0]
            and (not bounded or m[0] <= up_to)
            and (not flt.types or m[1] in flt.types)
            and (not flt.agent_id or m[4][0] == flt.agent_id)
            and (not flt.run_id or m[4][1] == flt.run_id)
            and (not flt.task_run_id or m[4][2] == flt.task_run_id)
        ][:limit]
        assert seen(db.read_sync(page)) == expected
        ranged = db.read_sync(
            functools.partial(event_log.read_range, namespace="ns", after=after, up_to=up_to)
        )
        assert seen(ranged) == [m for m in model if after < m[0] <= up_to]


async def test_a_packed_row_holds_at_most_max_bytes_of_payload(db: Database) -> None:
    data = b'"%s"' % (b"x" * 1000)
    count = 3 * event_packs.MAX_BYTES // len(data)

    def write(ctx: WriteContext) -> int:
        return ctx.emit_run("ns", ["t"] * count, [data] * count, [None] * count, run_id="r")

    assert await db.write(write) == 1
    spans = db.read_sync(lambda c: list(c.execute(select(schema.events.c.span)).scalars()))
    assert len(spans) == 4 and sum(spans) == count
    assert max(spans) * len(data) <= event_packs.MAX_BYTES
    assert (
        db.read_sync(lambda c: event_log.list_page(c, "ns", EventFilter(), after=0, limit=0)) == []
    )


async def test_archived_events_are_deleted_up_to_each_runs_own_last_archived_one(
    db: Database,
) -> None:
    """An event appended to run a after a was read, but older than what was read of b, is
    not in the archive (PostgreSQL reads batches of runs in separate statements): it stays."""

    def write(ctx: WriteContext) -> None:
        ctx.emit_run("ns", ["x"] * 3, [b"{}"] * 3, [None] * 3, agent_id="g", run_id="a")  # 1-3
        ctx.emit("ns", "late", b"{}", agent_id="g", run_id="a")  # 4: not archived
        ctx.emit_run("ns", ["x"] * 2, [b"{}"] * 2, [None] * 2, agent_id="g", run_id="b")  # 5-6

    await db.write(write)

    def delete(ctx: WriteContext) -> tuple[int, int, int]:
        return archive.delete_archived(ctx.conn, "ns", ["a", "b", "c"], {"a": 3, "b": 6})

    assert await db.write(delete) == (0, 0, 5)  # no run rows here; 5 events
    left = db.read_sync(lambda c: event_log.read_range(c, "ns", 0, 10))
    assert [(r.sequence, r.type) for r in left] == [(4, "late")]


async def test_with_packing_off_every_event_is_its_own_row(database_url: str) -> None:
    """pack_events = false: what replicas older than revision 0005 can read."""
    db = Database(database_url, pack_events=False)
    migrate.upgrade(db.write_engine)
    db.start()
    try:

        def write(ctx: WriteContext) -> None:
            ctx.emit_run("ns", ["a", "b", "a"], [b"{}", b"[]", b'""'], [None, 2, None], run_id="r")
            ctx.emit_many("ns", _mixed(ctx.now))

        await db.write(write)
        spans = db.read_sync(lambda c: list(c.execute(select(schema.events.c.span)).scalars()))
        assert spans == [1] * (3 + len(_mixed(0)))
        stored = db.read_sync(lambda c: event_log.read_range(c, "ns", 0, 100))
        assert [(r.type, r.data, r.client_time) for r in stored[:3]] == [
            ("a", b"{}", None),
            ("b", b"[]", 2),
            ("a", b'""', None),
        ]
    finally:
        db.close()
