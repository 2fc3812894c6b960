"""The group-committing writer's contract, on SQLite and PostgreSQL.

Each test holds the writer on a gate write, queues the writes under test behind it so
that they run as one batch, then opens the gate.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from stateward.storage import Database, DuplicateKey, EventDraft, StorageUnavailable, migrate
from stateward.storage.sql import Sql, run

_LEASE = Sql("INSERT INTO job_leases (name, owner, expires_at) VALUES (?, 'test', 0)")
_LEASES = Sql("SELECT name FROM job_leases ORDER BY name")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    migrate.upgrade(database.write_engine)
    database.start()
    yield database
    database.close()


class Gate:
    """A write that holds the writer thread until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, ctx: Any) -> None:
        self.entered.set()
        assert self.opened.wait(10)


async def one_batch(db: Database, *fns: Callable[[Any], Any]) -> list[Any]:
    """Run ``fns`` as one batch, in order; their results or exceptions."""
    gate = Gate()
    held = asyncio.ensure_future(db.write(gate))
    await asyncio.to_thread(gate.entered.wait, 10)
    writes = [asyncio.ensure_future(db.write(fn)) for fn in fns]
    await asyncio.sleep(0)  # each task queues its write, in order
    gate.opened.set()
    await held
    return await asyncio.gather(*writes, return_exceptions=True)


def leases(db: Database) -> list[str]:
    return db.read_sync(lambda conn: [row[0] for row in run(conn, _LEASES).fetchall()])


class Recorder:
    """Writes a lease row and an event, counts its runs, notes its after-commit callback."""

    def __init__(self, name: str, committed: list[str], fail: Exception | None = None) -> None:
        self.name, self.committed, self.fail = name, committed, fail
        self.runs = 0

    def __call__(self, ctx: Any) -> int:
        self.runs += 1
        run(ctx.conn, _LEASE, (self.name,))
        event = ctx.emit("default", "test.written", b"{}")
        ctx.after_commit(lambda: self.committed.append(self.name))
        if self.fail is not None:
            raise self.fail
        return int(event.sequence)


@pytest.mark.parametrize("failure", ["raises", "duplicate_key"])
async def test_a_refused_write_undoes_only_itself(db: Database, failure: str) -> None:
    seen: list[EventDraft] = []
    db.on_commit(seen.extend)
    committed: list[str] = []
    first = Recorder("a", committed)
    if failure == "raises":
        refused = Recorder("b", committed, fail=ValueError("refused"))
    else:  # a driver error on a statement, not on the job's own account
        refused = Recorder("a", committed)
    last = Recorder("c", committed)

    results = await one_batch(db, first, refused, last)

    assert results[0] == 1 and results[2] == 2  # no gap where the refused write's event was
    assert isinstance(results[1], ValueError if failure == "raises" else DuplicateKey)
    assert leases(db) == ["a", "c"]
    assert committed == ["a", "c"]
    assert [event.sequence for event in seen] == [1, 2]
    # The optimistic pass ran the first two, then the batch was replayed with savepoints.
    assert (first.runs, refused.runs, last.runs) == (2, 2, 1)


async def test_a_batch_without_refusals_runs_each_write_once(db: Database) -> None:
    committed: list[str] = []
    writes = [Recorder(name, committed) for name in "abc"]
    assert await one_batch(db, *writes) == [1, 2, 3]
    assert [write.runs for write in writes] == [1, 1, 1]
    assert committed == ["a", "b", "c"] and leases(db) == ["a", "b", "c"]


async def test_an_operational_error_fails_the_whole_batch(db: Database) -> None:
    committed: list[str] = []
    broken = sa_exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))
    results = await one_batch(db, Recorder("a", committed), Recorder("b", committed, fail=broken))
    assert all(isinstance(result, StorageUnavailable) for result in results)
    assert leases(db) == [] and committed == []
    assert await db.write(Recorder("c", committed)) == 1  # the next batch starts afresh


async def test_a_write_given_up_before_its_batch_never_runs(db: Database) -> None:
    committed: list[str] = []
    gate = Gate()
    held = asyncio.ensure_future(db.write(gate))
    await asyncio.to_thread(gate.entered.wait, 10)
    abandoned = Recorder("a", committed)
    waiting = asyncio.ensure_future(db.write(abandoned))
    await asyncio.sleep(0)
    waiting.cancel()
    gate.opened.set()
    await held
    assert await db.write(Recorder("b", committed)) == 1
    assert abandoned.runs == 0 and leases(db) == ["b"]


async def test_a_write_that_swallows_a_database_error_fails_alone(db: Database) -> None:
    """PostgreSQL aborts the transaction on any error; committing it would be a silent
    ROLLBACK for the whole batch. The writer must notice and answer only that write."""

    def lease(name: str) -> Callable[[Any], str]:
        def write(ctx: Any) -> str:
            run(ctx.conn, _LEASE, (name,))
            return name

        return write

    def swallow(ctx: Any) -> str:
        run(ctx.conn, _LEASE, ("swallower",))
        try:
            run(ctx.conn, _LEASE, ("swallower",))  # a duplicate key
        except sa_exc.IntegrityError:
            pass
        return "carried on"

    # Last in a batch without events: nothing after it would trip over the aborted state.
    first, swallowed = await one_batch(db, lease("a"), swallow)
    assert first == "a"
    if db.dialect == "postgresql":
        assert isinstance(swallowed, Exception)  # its RELEASE found the aborted transaction
        assert leases(db) == ["a"]
    else:  # SQLite keeps the transaction usable after a failed statement
        assert swallowed == "carried on"
        assert leases(db) == ["a", "swallower"]


_SYNCHRONOUS_COMMIT = Sql("SHOW synchronous_commit")


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("configured", "writes_with"),
    [("off", "on"), ("local", "local"), ("remote_apply", "remote_apply")],
)
def test_postgresql_writes_never_commit_with_synchronous_commit_off(
    postgres: Any, caplog: pytest.LogCaptureFixture, configured: str, writes_with: str
) -> None:
    # The setting comes with the connection, as a role or database default would.
    url = f"{postgres.create_database()}?options=-csynchronous_commit%3D{configured}"
    database = Database(url)
    try:
        migrate.upgrade(database.write_engine)
        database.start()
        seen = database.write_sync(lambda ctx: run(ctx.conn, _SYNCHRONOUS_COMMIT).fetchone()[0])
        assert seen == writes_with
        # Reads keep the configured value: they commit nothing.
        assert database.read_sync(lambda c: run(c, _SYNCHRONOUS_COMMIT).fetchone()[0]) == configured
    finally:
        database.close()
    warned = any("synchronous_commit is off" in r.getMessage() for r in caplog.records)
    assert warned == (configured == "off")
