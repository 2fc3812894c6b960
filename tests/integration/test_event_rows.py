"""Event rows as the writer stores them: every column round-trips, whatever is NULL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from stateward.storage import Database, EventDraft, WriteContext, migrate
from stateward.storage import events as event_log


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
