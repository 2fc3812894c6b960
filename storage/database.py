"""The database handle: engines, a read pool and a group-committing writer.

Writes are functions ``fn(ctx: WriteContext) -> T`` queued to one writer thread.
The writer drains whatever is queued (up to ``max_batch``), runs each function in
its own SAVEPOINT inside one transaction, and commits once for the whole batch:
one fsync (SQLite) or one WAL flush (PostgreSQL) is shared by every write in the
batch. A function that raises rolls back only its savepoint; its caller gets the
exception and the rest of the batch commits. Reads run on a small thread pool,
each in its own snapshot.

Event sequences: the first event a batch emits in a namespace locks that
namespace's counter row (``SELECT ... FOR UPDATE``; SQLite's writer already holds
the database lock via ``BEGIN IMMEDIATE``). Sequences are handed out in memory,
the counter row is updated and the events inserted right before COMMIT. Because
the lock is held until commit, a batch that takes sequences after another can
only commit after it: sequences follow commit order, with no gaps (a rolled-back
savepoint returns its sequences) and no reuse, also with many replicas.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from stateward.storage import schema
from stateward.storage.errors import StorageUnavailable, translate

T = TypeVar("T")
log = logging.getLogger(__name__)


def now_us() -> int:
    """The current time in microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


@dataclass(slots=True)
class EventDraft:
    """An event emitted by a write; its sequence is fixed when emitted."""

    namespace: str
    sequence: int
    type: str
    data: bytes
    created_at: int
    agent_id: str | None = None
    run_id: str | None = None
    task_run_id: str | None = None
    client_time: int | None = None

    def row(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "sequence": self.sequence,
            "type": self.type,
            "agent_id": self.agent_id,
            "run_id": self.run_id,
            "task_run_id": self.task_run_id,
            "data": self.data,
            "created_at": self.created_at,
            "client_time": self.client_time,
        }


@dataclass(slots=True)
class _Batch:
    heads: dict[str, int] = field(default_factory=dict)  # namespace -> last sequence handed out
    events: list[EventDraft] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)


class WriteContext:
    """What a write function sees: the connection, the clock and the event log."""

    def __init__(self, conn: Connection, dialect: str, batch: _Batch) -> None:
        self.conn = conn
        self.dialect = dialect
        self.now = now_us()
        self._batch = batch

    def emit(
        self,
        namespace: str,
        type: str,
        data: bytes,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        task_run_id: str | None = None,
        client_time: int | None = None,
    ) -> EventDraft:
        """Append an event to the log as part of this write; returns it with its sequence."""
        head = self._batch.heads.get(namespace)
        if head is None:
            head = self._lock_counter(namespace)
        draft = EventDraft(
            namespace, head + 1, type, data, self.now, agent_id, run_id, task_run_id, client_time
        )
        self._batch.heads[namespace] = head + 1
        self._batch.events.append(draft)
        return draft

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the writer thread once the batch has committed."""
        self._batch.callbacks.append(callback)

    def _lock_counter(self, namespace: str) -> int:
        t = schema.namespaces
        query = select(t.c.event_head).where(t.c.namespace == namespace).with_for_update()
        head = self.conn.execute(query).scalar()
        if head is None:
            ins = postgresql.insert(t) if self.dialect == "postgresql" else sqlite.insert(t)
            self.conn.execute(
                ins.values(
                    namespace=namespace, event_head=0, created_at=self.now
                ).on_conflict_do_nothing(index_elements=["namespace"])
            )
            head = self.conn.execute(query).scalar_one()
        return int(head)


@dataclass(slots=True)
class _Job:
    fn: Callable[[WriteContext], Any]
    future: concurrent.futures.Future[Any]


_STOP = object()
_BATCH_LOCK = 0x5354_4154_4557_5244  # "STATEWRD": the PostgreSQL advisory lock of write batches


class Database:
    """Owns the engines, the read pool and the writer thread."""

    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        read_threads: int = 4,
        max_batch: int = 512,
        echo: bool = False,
    ) -> None:
        self.url = url
        self.dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
        self.max_batch = max_batch
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(url, sqlite_synchronous, "BEGIN", echo, read_threads)
            self.write_engine = _sqlite_engine(url, sqlite_synchronous, "BEGIN IMMEDIATE", echo, 1)
        else:
            self.engine = create_engine(
                url,
                echo=echo,
                pool_size=read_threads + 1,
                max_overflow=4,
                pool_pre_ping=False,
                pool_recycle=3600,
            )
            self.write_engine = self.engine
        self._reads = concurrent.futures.ThreadPoolExecutor(read_threads, "stateward-read")
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._commit_listeners: list[Callable[[list[EventDraft]], None]] = []
        # Timing hook for metrics, kept free of any metrics library: observer(kind, seconds)
        # with kind "read" (one snapshot), "write" (one write function) or "commit" (a batch).
        self.observer: Callable[[str, float], None] | None = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_loop, name="stateward-writer", daemon=True
            )
            self._writer.start()

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join(timeout=30)
            self._writer = None
        self._reads.shutdown(wait=True, cancel_futures=True)
        self.write_engine.dispose()
        self.engine.dispose()

    def on_commit(self, listener: Callable[[list[EventDraft]], None]) -> None:
        """Call ``listener(events)`` in the writer thread after each commit that emitted events."""
        self._commit_listeners.append(listener)

    # -- reads and writes ----------------------------------------------------------
    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one read snapshot on the read pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reads, self._run_read, fn)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        return self._run_read(fn)

    def _run_read(self, fn: Callable[[Connection], T]) -> T:
        started = time.perf_counter()
        try:
            with self.engine.connect() as conn:
                return fn(conn)
        except sa_exc.SQLAlchemyError as error:
            raise translate(error) from error
        finally:
            self._observe("read", started)

    def _observe(self, kind: str, started: float) -> None:
        if self.observer is not None:
            try:
                self.observer(kind, time.perf_counter() - started)
            except Exception:  # metrics must never fail a read or undo a write
                log.exception("database observer failed")

    async def write(self, fn: Callable[[WriteContext], T]) -> T:
        """Run ``fn(ctx)`` in the next group commit; returns once it is durable."""
        if self._writer is None:
            raise StorageUnavailable("the database is not open")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Job(fn, future))
        return await asyncio.wrap_future(future)

    def write_sync(self, fn: Callable[[WriteContext], T]) -> T:
        """Blocking variant of :meth:`write`, for tools and start-up work."""
        if self._writer is None:
            raise StorageUnavailable("the database is not open")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Job(fn, future))
        return future.result()

    # -- the writer thread -----------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs = [first]
            stop = False
            while len(jobs) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                jobs.append(item)
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            if live:
                self._commit_batch(live)
            if stop:
                return

    def _commit_batch(self, jobs: list[_Job]) -> None:
        batch = _Batch()
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        started = time.perf_counter()
        try:
            with self.write_engine.connect() as conn:
                with conn.begin():
                    if self.dialect == "postgresql":
                        # Replicas' batches lock rows and event counters in whatever order
                        # their jobs come; taking one lock first orders whole batches and
                        # rules out deadlocks (the counter lock serialised them anyway).
                        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_BATCH_LOCK})")
                    for job in jobs:
                        outcomes.append(self._run_job(conn, batch, job))
                    self._flush_events(conn, batch)
            self._observe("commit", started)
        except BaseException as error:  # the whole batch failed: nothing committed
            failure = translate(error)
            log.warning("write batch of %d failed: %s", len(jobs), failure)
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(failure)
            return
        for callback in batch.callbacks:
            try:
                callback()
            except Exception:  # a cache or notifier must never undo a commit
                log.exception("after-commit callback failed")
        if batch.events:
            for listener in self._commit_listeners:
                try:
                    listener(batch.events)
                except Exception:
                    log.exception("commit listener failed")
        for job, result, refused in outcomes:
            if refused is not None:
                job.future.set_exception(refused)
            else:
                job.future.set_result(result)

    def _run_job(
        self, conn: Connection, batch: _Batch, job: _Job
    ) -> tuple[_Job, Any, BaseException | None]:
        heads = dict(batch.heads)
        n_events, n_callbacks = len(batch.events), len(batch.callbacks)
        savepoint = conn.begin_nested()
        started = time.perf_counter()
        try:
            result = job.fn(WriteContext(conn, self.dialect, batch))
            savepoint.commit()
            self._observe("write", started)
            return job, result, None
        except sa_exc.OperationalError:
            raise  # the connection or the disk failed: the whole batch goes
        except Exception as error:
            savepoint.rollback()
            # Give back what the failed write took, so sequences stay gap-free.
            batch.heads = heads
            del batch.events[n_events:]
            del batch.callbacks[n_callbacks:]
            return job, None, translate(error)

    def _flush_events(self, conn: Connection, batch: _Batch) -> None:
        if not batch.events:
            return
        _insert_events(conn, self.dialect, batch.events)
        t = schema.namespaces
        for namespace, head in batch.heads.items():
            conn.execute(update(t).where(t.c.namespace == namespace).values(event_head=head))


_EVENT_COLUMNS = (
    "namespace",
    "sequence",
    "type",
    "agent_id",
    "run_id",
    "task_run_id",
    "data",
    "created_at",
    "client_time",
)
# PostgreSQL: one statement whatever the batch size, each column bound as one array.
_PG_INSERT_EVENTS = (
    f"INSERT INTO events ({','.join(_EVENT_COLUMNS)}) SELECT * FROM unnest("
    "%s::varchar[], %s::bigint[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], "
    "%s::bytea[], %s::bigint[], %s::bigint[])"
)
# SQLite: rows per INSERT, 9 parameters each, within its variable limit (32766 since 3.32).
_SQLITE_ROWS = 3000 if sqlite3.sqlite_version_info >= (3, 32) else 100


@functools.lru_cache(maxsize=64)
def _sqlite_insert_sql(rows: int) -> str:
    row = "(" + ",".join("?" * len(_EVENT_COLUMNS)) + ")"
    return f"INSERT INTO events ({','.join(_EVENT_COLUMNS)}) VALUES {','.join([row] * rows)}"


def _insert_events(conn: Connection, dialect: str, drafts: list[EventDraft]) -> None:
    """Set-based INSERTs rather than executemany, which costs a round trip per row on psycopg
    and a GIL hand-off per row on sqlite3 (stalling the writer behind the event loop)."""
    if dialect == "postgresql":
        columns = [[getattr(d, name) for d in drafts] for name in _EVENT_COLUMNS]
        conn.exec_driver_sql(_PG_INSERT_EVENTS, tuple(columns))
        return
    for start in range(0, len(drafts), _SQLITE_ROWS):
        chunk = drafts[start : start + _SQLITE_ROWS]
        params: list[Any] = []
        for d in chunk:
            params += (
                d.namespace,
                d.sequence,
                d.type,
                d.agent_id,
                d.run_id,
                d.task_run_id,
                d.data,
                d.created_at,
                d.client_time,
            )
        conn.exec_driver_sql(_sqlite_insert_sql(len(chunk)), tuple(params))


def _sqlite_engine(url: str, synchronous: str, begin: str, echo: bool, pool_size: int) -> Engine:
    engine = create_engine(url, echo=echo, pool_size=pool_size, max_overflow=2)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so SAVEPOINT and
        # BEGIN IMMEDIATE behave as written.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine
