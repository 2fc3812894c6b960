"""The database handle: engines, a read pool and a group-committing writer.

Writes are functions ``fn(ctx: WriteContext) -> T`` queued to one writer thread.
The writer drains whatever is queued (up to ``max_batch``), runs the functions in one
transaction and commits once for the whole batch: one fsync (SQLite) or one WAL flush
(PostgreSQL) is shared by every write in the batch.

The contract: a function that raises affects only itself (its caller gets the
exception, the rest of the batch commits); an ``OperationalError`` (the connection or
the disk failed) fails the whole batch; after-commit callbacks and commit listeners
see only committed writes; callers are answered only after COMMIT returned.

How it is kept cheaply: the batch first runs optimistically, with no savepoints. Almost
always nothing raises and the batch commits as is. When a function raises, the
transaction is rolled back and the batch replayed from the start with each function in
its own SAVEPOINT, so the refusal undoes only that function's writes (hence a write
function must not change anything outside the database before it returns; what it
leaves for later goes through ``ctx.after_commit``). Savepoints cost a round trip each
on PostgreSQL and, through SQLAlchemy's ``begin_nested``, more than the write itself in
Python: the common batch pays none, and a replay issues them as plain SQL.

Reads run on a small thread pool, each in its own snapshot.

Event sequences: the first event a batch emits in a namespace locks that
namespace's counter row (``SELECT ... FOR UPDATE``; SQLite's writer already holds
the database lock via ``BEGIN IMMEDIATE``). Sequences are handed out in memory,
the counter row is updated and the events inserted right before COMMIT. Because
the lock is held until commit, a batch that takes sequences after another can
only commit after it: sequences follow commit order, with no gaps (a rolled-back
write returns its sequences) and no reuse, also with many replicas.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import operator
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc

from stateward.storage import event_packs
from stateward.storage.errors import StorageUnavailable, translate
from stateward.storage.sql import Sql, run

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
    span: int = 1  # > 1 only for a packed storage row (see event_packs.py)

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
            "span": self.span,
        }


@dataclass(slots=True)
class _Batch:
    heads: dict[str, int] = field(default_factory=dict)  # namespace -> last sequence handed out
    rows: list[EventDraft] = field(default_factory=list)  # event rows, some packed (span > 1)
    callbacks: list[Callable[[], None]] = field(default_factory=list)
    outcomes: list[tuple[_Job, Any, BaseException | None]] = field(default_factory=list)


class WriteContext:
    """What a write function sees: the connection, the clock and the event log."""

    def __init__(self, conn: Connection, dialect: str, batch: _Batch, *, pack: bool = True) -> None:
        self.conn = conn
        self.dialect = dialect
        self.now = now_us()
        self._batch = batch
        self._pack = pack

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
        self._batch.rows.append(draft)
        return draft

    def emit_many(self, namespace: str, drafts: list[EventDraft]) -> int:
        """Append events of one namespace built by the caller (``sequence`` unset) in order,
        numbering them; returns the first one's sequence. For batches of client events
        (stored packed, see :meth:`emit_run`): one call, not one :meth:`emit` per event."""
        head = self._batch.heads.get(namespace)
        if head is None:
            head = self._lock_counter(namespace)
        first = head + 1
        for draft in drafts:
            head += 1
            draft.sequence = head
        self._batch.heads[namespace] = head
        self._batch.rows.extend(_packed_rows(drafts) if self._pack else drafts)
        return first

    def emit_run(
        self,
        namespace: str,
        types: Sequence[str],
        datas: Sequence[bytes],
        client_times: Sequence[int | None],
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        task_run_id: str | None = None,
    ) -> int:
        """Append events that share their owners, given column by column; returns the first
        one's sequence. The usual AppendEvents batch: stored packed, with no object per
        event anywhere on the write path. Packed rows hold client events only: commit
        listeners rely on their types never being system types."""
        head = self._batch.heads.get(namespace)
        if head is None:
            head = self._lock_counter(namespace)
        owners = (agent_id, run_id, task_run_id)
        start = 0
        ends = event_packs.cuts(datas, types) if self._pack else range(1, len(datas) + 1)
        for end in ends:
            self._batch.rows.append(
                _packed_row(
                    namespace,
                    head + end,
                    types[start:end],
                    datas[start:end],
                    client_times[start:end],
                    self.now,
                    owners,
                )
            )
            start = end
        self._batch.heads[namespace] = head + len(datas)
        return head + 1

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the writer thread once the batch has committed."""
        self._batch.callbacks.append(callback)

    def _lock_counter(self, namespace: str) -> int:
        row = run(self.conn, _COUNTER, (namespace,)).fetchone()
        if row is None:
            run(self.conn, _NEW_COUNTER, (namespace, self.now))
            row = run(self.conn, _COUNTER, (namespace,)).fetchone()
        return int(row[0])


_COUNTER = Sql("SELECT event_head FROM namespaces WHERE namespace = ?", for_update=True)
_NEW_COUNTER = Sql(
    "INSERT INTO namespaces (namespace, event_head, created_at) VALUES (?, 0, ?) "
    "ON CONFLICT (namespace) DO NOTHING"
)
_SET_COUNTER = Sql("UPDATE namespaces SET event_head = ? WHERE namespace = ?")
_SAVEPOINT = Sql("SAVEPOINT job")
_RELEASE = Sql("RELEASE SAVEPOINT job")
_ROLLBACK_TO = Sql("ROLLBACK TO SAVEPOINT job")
# "STATEWRD": the PostgreSQL advisory lock of write batches.
_BATCH_LOCK = Sql(f"SELECT pg_advisory_xact_lock({0x5354_4154_4557_5244})")


@dataclass(slots=True)
class _Job:
    fn: Callable[[WriteContext], Any]
    # An asyncio future of ``loop`` (Database.write), or a concurrent one (write_sync).
    future: asyncio.Future[Any] | concurrent.futures.Future[Any]
    loop: asyncio.AbstractEventLoop | None = None

    def claim(self) -> bool:
        """False if the caller gave up before the writer got to it (the job is skipped)."""
        if self.loop is None:
            assert isinstance(self.future, concurrent.futures.Future)
            return self.future.set_running_or_notify_cancel()
        return not self.future.cancelled()


class _Refused(Exception):
    """A write raised during the optimistic pass: replay the batch with savepoints."""


_STOP = object()
MIN_SQLITE = (3, 35)  # UPDATE ... RETURNING


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
        pack_events: bool = True,
    ) -> None:
        self.url = url
        self.pack_events = pack_events  # False: one row per event, as before revision 0005
        self.dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
        self.max_batch = max_batch
        if self.dialect == "sqlite" and sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StorageUnavailable(
                f"this Python's SQLite is {sqlite3.sqlite_version}; Stateward needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer (for RETURNING): use a newer "
                "Python build, or PostgreSQL"
            )
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(url, sqlite_synchronous, "BEGIN", echo, read_threads)
            self.write_engine = _sqlite_engine(url, sqlite_synchronous, "BEGIN IMMEDIATE", echo, 1)
        else:
            # Reads at READ COMMITTED see one snapshot per statement with or without a
            # transaction around them, so they run in autocommit: no BEGIN and ROLLBACK
            # round trips around each read.
            self.engine = create_engine(
                url,
                echo=echo,
                pool_size=read_threads,
                max_overflow=4,
                pool_pre_ping=False,
                pool_recycle=3600,
                isolation_level="AUTOCOMMIT",
            )
            _without_jit(self.engine)
            self.write_engine = _postgresql_write_engine(url, echo)
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
        """Call ``listener(rows)`` in the writer thread after each commit that emitted events.

        ``rows`` are the committed event rows in sequence order: a packed one (``span`` > 1)
        holds a run of events, and ``sequence`` is its last; :func:`expand` gives one draft
        per event to the listeners that need them.
        """
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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, future, loop))
        return await future

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
            live = [job for job in jobs if job.claim()]
            if live:
                self._commit_batch(live)
            if stop:
                return

    def _commit_batch(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            with self.write_engine.connect() as conn:
                try:
                    batch = self._run_batch(conn, jobs, careful=False)
                except _Refused:
                    # Its writes and everyone's went with the rollback; replay with savepoints
                    # so that only the refused write is undone.
                    batch = self._run_batch(conn, jobs, careful=True)
            self._observe("commit", started)
        except BaseException as error:  # the whole batch failed: nothing committed
            failure = translate(error)
            log.warning("write batch of %d failed: %s", len(jobs), failure)
            _settle([(job, None, failure) for job in jobs])
            return
        for callback in batch.callbacks:
            try:
                callback()
            except Exception:  # a cache or notifier must never undo a commit
                log.exception("after-commit callback failed")
        if batch.rows:
            for listener in self._commit_listeners:
                try:
                    listener(batch.rows)
                except Exception:
                    log.exception("commit listener failed")
        _settle(batch.outcomes)

    def _run_batch(self, conn: Connection, jobs: list[_Job], *, careful: bool) -> _Batch:
        """Run ``jobs`` in one transaction and commit it; with ``careful``, each in a savepoint.

        Without ``careful``, the first write that raises rolls everything back (``_Refused``).
        """
        batch = _Batch()
        with conn.begin():
            if self.dialect == "postgresql":
                # Replicas' batches lock rows and event counters in whatever order
                # their jobs come; taking one lock first orders whole batches and
                # rules out deadlocks (the counter lock serialised them anyway).
                run(conn, _BATCH_LOCK)
            for job in jobs:
                if careful:
                    self._run_careful(conn, batch, job)
                else:
                    self._run_optimistic(conn, batch, job)
            if not careful and self.dialect == "postgresql" and _aborted(conn):
                # A write caught a database error and returned: PostgreSQL would quietly
                # turn the COMMIT into a ROLLBACK. The replay's RELEASE finds the culprit.
                raise _Refused
            self._flush_events(conn, batch)
        return batch

    def _run_optimistic(self, conn: Connection, batch: _Batch, job: _Job) -> None:
        started = time.perf_counter()
        try:
            result = job.fn(WriteContext(conn, self.dialect, batch, pack=self.pack_events))
        except sa_exc.OperationalError:
            raise  # the connection or the disk failed: the whole batch goes
        except Exception as error:
            raise _Refused from error
        batch.outcomes.append((job, result, None))
        self._observe("write", started)

    def _run_careful(self, conn: Connection, batch: _Batch, job: _Job) -> None:
        heads = dict(batch.heads)
        n_rows, n_callbacks = len(batch.rows), len(batch.callbacks)
        started = time.perf_counter()
        run(conn, _SAVEPOINT)
        try:
            result = job.fn(WriteContext(conn, self.dialect, batch, pack=self.pack_events))
            run(conn, _RELEASE)  # fails if the write swallowed an error PostgreSQL did not
        except sa_exc.OperationalError:
            raise
        except Exception as error:
            run(conn, _ROLLBACK_TO)
            run(conn, _RELEASE)
            # Give back what the failed write took, so sequences stay gap-free.
            batch.heads = heads
            del batch.rows[n_rows:]
            del batch.callbacks[n_callbacks:]
            batch.outcomes.append((job, None, translate(error)))
            return
        batch.outcomes.append((job, result, None))
        self._observe("write", started)

    def _flush_events(self, conn: Connection, batch: _Batch) -> None:
        if not batch.rows:
            return
        _insert_events(conn, self.dialect, batch.rows)
        for namespace, head in batch.heads.items():
            run(conn, _SET_COUNTER, (head, namespace))


def _aborted(conn: Connection) -> bool:
    """True when the PostgreSQL transaction on ``conn`` failed and can only roll back."""
    from psycopg.pq import TransactionStatus

    raw: Any = conn.connection.dbapi_connection
    return bool(raw.info.transaction_status == TransactionStatus.INERROR)


def _settle(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
    """Answer the callers: one wake-up per event loop for the whole batch, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, BaseException | None]]] = {}
    for job, result, error in outcomes:
        if job.loop is None:
            _resolve([(job.future, result, error)])
        else:
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
    for loop, answers in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, answers)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass


def _resolve(answers: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, result, error in answers:
        if future.done():  # cancelled while the batch ran
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


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
    "span",
)
# PostgreSQL: one statement whatever the batch size, each column bound as one array.
_PG_INSERT_EVENTS = (
    f"INSERT INTO events ({','.join(_EVENT_COLUMNS)}) SELECT * FROM unnest("
    "%s::varchar[], %s::bigint[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], "
    "%s::bytea[], %s::bigint[], %s::bigint[], %s::integer[])"
)
# SQLite: rows per INSERT, a power of two so that few statement shapes exist (each one is
# compiled once, ~6 µs a row, then found in sqlite3's statement cache); at most 9
# parameters a row, within the variable limit (32766 since 3.32, 999 before).
_SQLITE_ROWS = 512 if sqlite3.sqlite_version_info >= (3, 32) else 64
# sqlite3 binds None and bytes through its adapter lookup (~0.5 µs each, more than the row's
# B-tree work), str, int and bytearray directly. So a row's NULLs are written as literals
# (one statement shape per pattern of NULLs), the namespace is bound once per statement as
# ?1, and data goes in as a bytearray.
_NULLABLE = ("agent_id", "run_id", "task_run_id", "client_time")


@functools.lru_cache(maxsize=64)
def _sqlite_insert_sql(nulls: int, rows: int) -> Sql:
    """INSERT of ``rows`` rows whose nullable columns flagged in ``nulls`` are NULL."""
    row = "(?1,?,?,?," + ",".join("NULL" if nulls >> i & 1 else "?" for i in range(4)) + ",?)"
    columns = ",".join(("namespace", "sequence", "type", "created_at", *_NULLABLE, "data"))
    return Sql(f"INSERT INTO events ({columns}) VALUES {','.join([row] * rows)}")


@functools.lru_cache(maxsize=16)
def _sqlite_row_values(nulls: int) -> Callable[[EventDraft], tuple[Any, ...]]:
    """A draft's bound values (data aside) for the rows of :func:`_sqlite_insert_sql`."""
    present = [name for i, name in enumerate(_NULLABLE) if not nulls >> i & 1]
    return operator.attrgetter("sequence", "type", "created_at", *present)


def _insert_events(conn: Connection, dialect: str, drafts: list[EventDraft]) -> None:
    """Set-based INSERTs rather than executemany, which costs a round trip per row on psycopg
    and a GIL hand-off per row on sqlite3 (stalling the writer behind the event loop)."""
    if dialect == "postgresql":
        columns = [[getattr(d, name) for d in drafts] for name in _EVENT_COLUMNS]
        conn.exec_driver_sql(_PG_INSERT_EVENTS, tuple(columns))
        return
    packed = [d for d in drafts if d.span > 1]
    if packed:
        _insert_packed(conn, packed)
        drafts = [d for d in drafts if d.span == 1]
    groups: dict[tuple[str, int], list[EventDraft]] = {}  # (namespace, NULL pattern) -> rows
    for d in drafts:
        key = (
            d.namespace,
            (d.agent_id is None)
            | (d.run_id is None) << 1
            | (d.task_run_id is None) << 2
            | (d.client_time is None) << 3,
        )
        group = groups.get(key)
        if group is None:
            groups[key] = [d]
        else:
            group.append(d)
    for (namespace, nulls), group in groups.items():
        values = _sqlite_row_values(nulls)
        start = 0
        while start < len(group):
            rows = min(len(group) - start, _SQLITE_ROWS)
            rows = 1 << (rows.bit_length() - 1)  # 100 rows: 64 + 32 + 4
            chunk = group[start : start + rows]
            start += rows
            params: list[Any] = [namespace]
            for d in chunk:
                params += values(d)
                params.append(bytearray(d.data))
            run(conn, _sqlite_insert_sql(nulls, len(chunk)), params)


def _insert_packed(conn: Connection, rows: list[EventDraft]) -> None:
    """Packed rows are few (about one per write), so plain bound INSERTs do."""
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        params: list[Any] = []
        for d in chunk:
            params += (d.namespace, d.sequence, d.type, d.agent_id, d.run_id, d.task_run_id)
            params += (d.data, d.created_at, d.client_time, d.span)
        run(conn, _packed_insert_sql(len(chunk)), params)


@functools.lru_cache(maxsize=64)
def _packed_insert_sql(rows: int) -> Sql:
    row = "(" + ",".join("?" * len(_EVENT_COLUMNS)) + ")"
    return Sql(f"INSERT INTO events ({','.join(_EVENT_COLUMNS)}) VALUES {','.join([row] * rows)}")


_KEYS = operator.attrgetter("agent_id", "run_id", "task_run_id")
_TYPE = operator.attrgetter("type")
_DATA = operator.attrgetter("data")
_CLIENT_TIME = operator.attrgetter("client_time")


def _packed_rows(drafts: list[EventDraft]) -> list[EventDraft]:
    """The storage rows of one write's numbered events: each run of consecutive events with
    the same agent, run and task run becomes packed rows (split by ``event_packs.cuts``)."""
    if len(drafts) < 2:
        return drafts
    keys = list(map(_KEYS, drafts))
    rows: list[EventDraft] = []
    start = 0
    for i in range(1, len(drafts) + 1):
        if i < len(drafts) and keys[i] == keys[start]:
            continue
        events = drafts[start:i]
        datas, types = list(map(_DATA, events)), list(map(_TYPE, events))
        first = 0
        for end in event_packs.cuts(datas, types):
            rows.append(
                _packed_row(
                    events[0].namespace,
                    events[end - 1].sequence,
                    types[first:end],
                    datas[first:end],
                    list(map(_CLIENT_TIME, events[first:end])),
                    events[0].created_at,
                    keys[start],
                )
            )
            first = end
        start = i
    return rows


def _packed_row(
    namespace: str,
    last: int,
    types: Sequence[str],
    datas: Sequence[bytes],
    client_times: Sequence[int | None],
    created_at: int,
    owners: tuple[str | None, str | None, str | None],
) -> EventDraft:
    """The row of events ``last - len(datas) + 1 .. last`` (a plain one for a single event)."""
    agent_id, run_id, task_run_id = owners
    if len(datas) == 1:
        return EventDraft(namespace, last, types[0], datas[0], created_at, *owners, client_times[0])
    uniform = types.count(types[0]) == len(types)
    body = event_packs.pack(datas, None if uniform else types, client_times)
    kind = types[0] if uniform else ""
    return EventDraft(
        namespace, last, kind, body, created_at, agent_id, run_id, task_run_id, None, len(datas)
    )


def expand(rows: list[EventDraft]) -> list[EventDraft]:
    """One draft per event of committed rows (for listeners that look at each event)."""
    if all(row.span == 1 for row in rows):
        return rows
    out: list[EventDraft] = []
    for row in rows:
        if row.span == 1:
            out.append(row)
        else:
            out += (EventDraft(*fields) for fields in event_packs.events_of(row))
    return out


def _without_jit(engine: Engine) -> None:
    """Turn PostgreSQL's JIT off for ``engine``'s sessions. It compiles a query with LLVM
    once its estimated cost passes jit_above_cost: an agent page filtered by 64 labels
    (one probe per row each) was estimated that costly and spent 2 s compiling for a 30 ms
    scan. Stateward's queries are short; compiling never pays."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET jit = off")
        dbapi_conn.commit()  # the SET lasts for the session only once committed


def _postgresql_write_engine(url: str, echo: bool) -> Engine:
    engine = create_engine(url, echo=echo, pool_size=1, max_overflow=4, pool_recycle=3600)
    _without_jit(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # An answered write must survive a PostgreSQL crash, whatever the role, database
        # or cluster says: with synchronous_commit off, COMMIT returns before its WAL
        # record is flushed. Every other value flushes locally first; the stronger ones
        # (remote_write, remote_apply, for synchronous standbys) are kept.
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            if cursor.fetchone()[0] == "off":
                cursor.execute("SET synchronous_commit TO on")
                log.warning(
                    "synchronous_commit is off for this database or role; Stateward "
                    "turned it on for its write connections (answered writes are durable)"
                )
        dbapi_conn.commit()  # the SET lasts for the session only once committed

    return engine


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
