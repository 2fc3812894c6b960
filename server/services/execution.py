"""Execution use cases: workflow runs, task runs, the event log and subscriptions."""

from __future__ import annotations

import asyncio
import functools
import json
import json.scanner
import operator
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import orjson
from sqlalchemy import Connection

from stateward.server import metrics
from stateward.server.domain import paging
from stateward.server.domain import runs as rules
from stateward.server.domain import validation as check
from stateward.server.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Violations,
)
from stateward.server.domain.runs import RunStatus, TaskStatus
from stateward.server.events_bus import EventBus
from stateward.server.services import weights
from stateward.server.services.idempotency import Replay, Stored, guarded
from stateward.server.services.sweeper import (
    RunLeaseExpired,
    interrupt_now,
    mark_expired,
    require_live_lease,
)
from stateward.storage import Database, EventDraft, WriteContext
from stateward.storage import agents as agent_rows
from stateward.storage import events as event_log
from stateward.storage import runs as run_rows
from stateward.storage.events import EventFilter
from stateward.storage.records import ErrorRecord, EventRecord
from stateward.storage.runs import RunRecord, TaskRunRecord

T = TypeVar("T")

CATCH_UP_PAGE = 500
# A stream's catch-up reads stop at this many payload bytes too: a subscriber that stops
# reading holds one such batch (encoded), not 500 events of up to 64 KiB each.
CATCH_UP_BYTES = 1 << 20
DEFAULT_KEEPALIVE = 15.0
_TYPE_CACHE_LIMIT = 4096
# Columns of a NewEvent, for map() over a batch.
_TYPE, _DATA, _CLIENT_TIME, _RUN_ID, _TASK_RUN_ID = map(operator.itemgetter, range(5))


def _data(**fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


# A client event to append, as the transport received it: (type, data, client_time, run_id,
# task_run_id). A plain tuple: a NamedTuple's constructor is a Python call per event.
NewEvent = tuple[str, bytes, int | None, str, str]


@dataclass(frozen=True, slots=True)
class Lease:
    """A heartbeat's answer."""

    cancel_requested: bool
    expires_at: int | None


@dataclass(frozen=True, slots=True)
class Keepalive:
    """A subscription item: nothing new; ``head`` is the newest committed sequence."""

    head: int


class _IdleTimer:
    """Wakes a stream that sent nothing for ``interval`` s so that it sends a Keepalive.

    The stream records each delivery in ``last`` and checks ``due`` before it waits; the
    timer runs once per interval however many events flow (a per-wait timeout would
    schedule and cancel a timer for every event).
    """

    __slots__ = ("wakeup", "interval", "clock", "last", "due", "_handle")

    def __init__(self, wakeup: asyncio.Event, interval: float) -> None:
        loop = asyncio.get_running_loop()
        self.wakeup = wakeup
        self.interval = interval
        self.clock = loop.time
        self.last = loop.time()
        self.due = False
        self._handle = loop.call_at(self.last + interval, self._check)

    def _check(self) -> None:
        now = self.clock()
        if now - self.last >= self.interval:
            self.due = True
            self.last = now  # the Keepalive about to go counts as a delivery
            self.wakeup.set()
        self._handle = asyncio.get_running_loop().call_at(self.last + self.interval, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


class _LeaseExpired(FailedPrecondition):
    """Raised inside a write to roll it back; the caller then finishes the task run."""

    def __init__(self, task_run_id: str) -> None:
        super().__init__(f"task run {task_run_id!r}'s lease expired", reason="LEASE_EXPIRED")
        self.task_run_id = task_run_id


def _run_not_found(run_id: str) -> NotFound:
    return NotFound(f"workflow run {run_id!r} does not exist")


def _task_not_found(task_run_id: str) -> NotFound:
    return NotFound(f"task run {task_run_id!r} does not exist")


def _check_error(v: Violations, error: ErrorRecord) -> None:
    check.check_text(v, "error.message", error.message, check.MAX_MESSAGE, required=True)
    if error.kind not in rules.ERROR_KINDS:
        v.add("error.kind", f"is not a known ErrorKind (got {error.kind})")
    if error.details:
        check.parse_json(v, "error.details_json", error.details, limit=rules.MAX_DOCUMENT)


def _check_document(v: Violations, field: str, raw: bytes) -> bytes:
    """Any JSON value up to the document limit; empty means null."""
    if not raw:
        return b"null"
    check.parse_json(v, field, raw, limit=rules.MAX_DOCUMENT, require_object=False)
    return raw


def _page(
    items: list[T],
    size: int,
    digest: str,
    cursor: Callable[[T], list[Any]],
    weigh: Callable[[T], int],
    budget: int,
) -> tuple[list[T], str]:
    """The page of ``items`` and its next token (``paging.page_of``)."""
    return paging.page_of(items, size, weigh, budget, digest, cursor)


class ExecutionService:
    def __init__(self, db: Database, bus: EventBus, *, page_bytes: int = 8 << 20) -> None:
        self.db = db
        self.bus = bus
        self.page_bytes = page_bytes  # the record bytes one list response may carry
        self._valid_types: set[str] = set()

    # -- workflow runs ------------------------------------------------
    async def start_run(
        self,
        namespace: str,
        workflow_name: str,
        agent_id: str,
        input: bytes,
        labels: dict[str, str],
        replay: Replay | None = None,
        *,
        heartbeat_timeout_us: int | None = None,
    ) -> RunRecord | Stored:
        v = Violations()
        check.check_text(v, "workflow_name", workflow_name, check.MAX_TYPE, required=True)
        check.check_id(v, "agent_id", agent_id, required=False)
        input = _check_document(v, "input_json", input)
        check.check_labels(v, "labels", labels)
        check.check_request_id(v, replay.request_id if replay else "")
        rules.check_duration(v, "heartbeat_timeout", heartbeat_timeout_us)
        v.raise_if_any()

        def write(ctx: WriteContext) -> RunRecord:
            if agent_id:
                self._require_live_agent(ctx.conn, namespace, agent_id)
            run_id = rules.new_run_id(ctx.now)
            record = RunRecord(
                namespace=namespace,
                run_id=run_id,
                workflow_name=workflow_name,
                agent_id=agent_id or None,
                status=RunStatus.RUNNING.value,
                input=input,
                labels=dict(labels),
                attempt=1,
                root_run_id=run_id,
                created_at=ctx.now,
                updated_at=ctx.now,
                started_at=ctx.now,
                heartbeat_timeout_us=heartbeat_timeout_us,
                lease_expires_at=rules.run_lease_expiry(ctx.now, heartbeat_timeout_us),
            )
            self._require_fits_run(record, weights.COPY_BYTES + weights.END_BYTES)
            run_rows.insert_run(ctx.conn, record)
            ctx.emit(
                namespace,
                rules.RUN_EVENTS[RunStatus.RUNNING],
                _data(workflow_name=workflow_name, attempt=1),
                agent_id=record.agent_id,
                run_id=run_id,
            )
            return record

        return await self.db.write(guarded(namespace, replay, write))

    async def get_run(self, namespace: str, run_id: str) -> RunRecord:
        v = Violations()
        check.check_id(v, "run_id", run_id)
        v.raise_if_any()
        record = await self.db.read(lambda conn: run_rows.get_run(conn, namespace, run_id))
        if record is None:
            raise _run_not_found(run_id)
        return record

    async def list_runs(
        self,
        namespace: str,
        *,
        workflow_name: str,
        status: str | None,
        labels: dict[str, str],
        agent_id: str,
        created_from: int | None,
        created_to: int | None,
        root_run_id: str,
        page_size: int,
        page_token: str,
    ) -> tuple[list[RunRecord], str]:
        v = Violations()
        check.check_text(v, "workflow_name", workflow_name, check.MAX_TYPE)
        check.check_labels(v, "labels", labels)
        check.check_id(v, "agent_id", agent_id, required=False)
        check.check_id(v, "root_run_id", root_run_id, required=False)
        size = check.check_page_size(v, page_size)
        v.raise_if_any()
        digest = paging.filter_digest(
            namespace,
            "runs",
            workflow_name,
            status,
            sorted(labels.items()),
            agent_id,
            created_from,
            created_to,
            root_run_id,
        )
        cursor = paging.decode(page_token, digest, (int, str))
        before = (cursor[0], cursor[1]) if cursor else None
        rows = await self.db.read(
            lambda conn: run_rows.list_runs(
                conn,
                namespace,
                workflow_name=workflow_name or None,
                status=status,
                labels=labels,
                agent_id=agent_id or None,
                created_from=created_from,
                created_to=created_to,
                root_run_id=root_run_id or None,
                before=before,
                limit=size,
                budget=self.page_bytes,
            )
        )
        return _page(
            rows, size, digest, lambda r: [r.created_at, r.run_id], weights.run, self.page_bytes
        )

    async def complete_run(
        self, namespace: str, run_id: str, result: bytes, replay: Replay | None = None
    ) -> RunRecord | Stored:
        v = Violations()
        check.check_id(v, "run_id", run_id)
        result = _check_document(v, "result_json", result)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()
        return await self._finish_run(
            namespace, run_id, RunStatus.COMPLETED, replay, result=result, data={}
        )

    async def fail_run(
        self, namespace: str, run_id: str, error: ErrorRecord, replay: Replay | None = None
    ) -> RunRecord | Stored:
        v = Violations()
        check.check_id(v, "run_id", run_id)
        _check_error(v, error)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()
        return await self._finish_run(
            namespace,
            run_id,
            RunStatus.FAILED,
            replay,
            error=error,
            data={"error": error.message, "error_kind": error.kind, "retryable": error.retryable},
        )

    async def cancel_run(
        self, namespace: str, run_id: str, reason: str, replay: Replay | None = None
    ) -> RunRecord | Stored:
        v = Violations()
        check.check_id(v, "run_id", run_id)
        check.check_text(v, "reason", reason, check.MAX_REASON)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()
        return await self._finish_run(
            namespace, run_id, RunStatus.CANCELLED, replay, data={"reason": reason}, cancel=True
        )

    async def heartbeat_run(self, namespace: str, run_id: str) -> int | None:
        """Renew a RUNNING run's lease; returns the new expiry (None without a lease)."""
        v = Violations()
        check.check_id(v, "run_id", run_id)
        v.raise_if_any()

        def write(ctx: WriteContext) -> int | None:
            run = run_rows.get_run(ctx.conn, namespace, run_id, for_update=True)
            if run is None:
                raise _run_not_found(run_id)
            rules.require_run_running(run_id, run.status, "send heartbeats")
            require_live_lease(run, ctx.now)
            lease = rules.run_lease_expiry(ctx.now, run.heartbeat_timeout_us)
            if not run_rows.renew_run_lease(ctx.conn, run, ctx.now, lease):
                raise RunLeaseExpired(run_id)
            return lease

        return await self._leased(namespace, write)

    async def _leased(self, namespace: str, write: Callable[[WriteContext], T]) -> T:
        """Run a write on a workflow run; if the run's lease had run out, interrupt the run
        first and say so. A late call never revives a run: it ends on the spot, as the
        sweeper would have ended it a moment later."""
        try:
            return await self.db.write(write)
        except RunLeaseExpired as expired:
            run_id = expired.run_id
        run = await interrupt_now(self.db, namespace, run_id)
        status = run.status if run is not None else RunStatus.INTERRUPTED.value
        message = run.error.message if run is not None and run.error else "its lease expired"
        raise FailedPrecondition(
            f"workflow run {run_id!r} is {status}: {message}",
            reason="INVALID_RUN_STATUS",
            subject=f"runs/{run_id}",
            metadata={"current_status": status, "required_status": RunStatus.RUNNING.value},
        )

    async def _finish_run(
        self,
        namespace: str,
        run_id: str,
        target: RunStatus,
        replay: Replay | None,
        *,
        data: dict[str, Any],
        result: bytes | None = None,
        error: ErrorRecord | None = None,
        cancel: bool = False,
    ) -> RunRecord | Stored:
        def write(ctx: WriteContext) -> RunRecord:
            record = run_rows.get_run(ctx.conn, namespace, run_id, for_update=True)
            if record is None:
                raise _run_not_found(run_id)
            require_live_lease(record, ctx.now)
            rules.require_run_move(run_id, record.status, target)
            stamped = (
                ErrorRecord(error.message, error.kind, error.retryable, error.details, ctx.now)
                if error is not None
                else None
            )
            if result is not None or stamped is not None:  # ends the run: a copy drops them
                self._require_fits_run(
                    replace(
                        record,
                        result=record.result if result is None else result,
                        error=stamped or record.error,
                    )
                )
            if not run_rows.finish_run(
                ctx.conn,
                record,
                target.value,
                ctx.now,
                result=result,
                error=stamped,
                cancel_requested=True if cancel else None,
            ):
                raise FailedPrecondition(
                    f"workflow run {run_id!r} changed concurrently; read it again",
                    reason="INVALID_RUN_STATUS",
                    subject=f"runs/{run_id}",
                )
            if cancel:
                flagged = run_rows.request_cancel(ctx.conn, namespace, run_id)
                data["cancel_requested_task_runs"] = len(flagged)
            ctx.emit(
                namespace,
                rules.RUN_EVENTS[target],
                _data(**data),
                agent_id=record.agent_id,
                run_id=run_id,
            )
            return record

        return await self._leased(namespace, guarded(namespace, replay, write))

    # -- task runs ------------------------------------------------
    async def start_task(
        self,
        namespace: str,
        run_id: str,
        task_id: str,
        agent_id: str,
        *,
        timeout_us: int | None,
        heartbeat_timeout_us: int | None,
        input: bytes,
        replay: Replay | None = None,
    ) -> TaskRunRecord | Stored:
        v = Violations()
        check.check_id(v, "run_id", run_id)
        check.check_text(v, "task_id", task_id, check.MAX_TYPE, required=True)
        check.check_id(v, "agent_id", agent_id)
        rules.check_duration(v, "timeout", timeout_us)
        rules.check_duration(v, "heartbeat_timeout", heartbeat_timeout_us)
        input = _check_document(v, "input_json", input)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()
        timeout_us, heartbeat_timeout_us = rules.effective_timeouts(
            timeout_us, heartbeat_timeout_us
        )

        def write(ctx: WriteContext) -> TaskRunRecord:
            # Locking the run orders task starts against its completion or cancellation
            # and makes the attempt count race-free across replicas.
            run = run_rows.get_run(ctx.conn, namespace, run_id, for_update=True)
            if run is None:
                raise _run_not_found(run_id)
            rules.require_run_running(run_id, run.status, "start task runs")
            require_live_lease(run, ctx.now)
            self._require_live_agent(ctx.conn, namespace, agent_id)
            attempt = run_rows.max_attempt(ctx.conn, namespace, run.root_run_id, task_id) + 1
            task_run_id = rules.new_task_run_id(ctx.now)
            event = ctx.emit(
                namespace,
                rules.TASK_EVENTS[TaskStatus.RUNNING],
                _data(task_id=task_id, attempt=attempt),
                agent_id=agent_id,
                run_id=run_id,
                task_run_id=task_run_id,
            )
            record = TaskRunRecord(
                namespace=namespace,
                task_run_id=task_run_id,
                run_id=run_id,
                task_id=task_id,
                agent_id=agent_id,
                attempt=attempt,
                status=TaskStatus.RUNNING.value,
                input=input,
                started_at=ctx.now,
                seq=event.sequence,
                timeout_us=timeout_us,
                heartbeat_timeout_us=heartbeat_timeout_us,
                lease_expires_at=rules.lease_expiry(
                    ctx.now, timeout_us, None, heartbeat_timeout_us
                ),
            )
            self._require_fits_task(record, weights.COPY_BYTES + weights.END_BYTES)
            run_rows.insert_task(ctx.conn, record)
            return record

        return await self._leased(namespace, guarded(namespace, replay, write))

    async def heartbeat(self, namespace: str, task_run_id: str, progress: bytes) -> Lease:
        v = Violations()
        check.check_id(v, "task_run_id", task_run_id)
        if progress:
            check.parse_json(
                v, "progress_json", progress, limit=rules.MAX_DOCUMENT, require_object=False
            )
        v.raise_if_any()

        def write(ctx: WriteContext) -> Lease:
            task = self._running_task(ctx, namespace, task_run_id, "heartbeat")
            # A run whose own lease ran out is over, swept or not: its workers must hear
            # so now, not after the sweeper's next pass.
            run = run_rows.get_run(ctx.conn, namespace, task.run_id)
            if run is not None:
                require_live_lease(run, ctx.now)
            if progress:
                room = weights.COPY_BYTES + weights.END_BYTES
                self._require_fits_task(replace(task, progress=progress), room)
            lease = rules.lease_expiry(
                task.started_at, task.timeout_us, ctx.now, task.heartbeat_timeout_us
            )
            if not run_rows.renew_lease(ctx.conn, task, ctx.now, lease, progress or None):
                raise _LeaseExpired(task_run_id)
            return Lease(task.cancel_requested, lease)

        try:
            return await self._expiring(namespace, write)
        except RunLeaseExpired as expired:
            await interrupt_now(self.db, namespace, expired.run_id)  # flags this task run
        return await self._expiring(namespace, write)

    async def complete_task(
        self,
        namespace: str,
        task_run_id: str,
        result: bytes,
        compensation: bytes,
        replay: Replay | None = None,
    ) -> TaskRunRecord | Stored:
        v = Violations()
        check.check_id(v, "task_run_id", task_run_id)
        result = _check_document(v, "result_json", result)
        if compensation:
            check.parse_json(
                v, "compensation_json", compensation, limit=rules.MAX_DOCUMENT, require_object=False
            )
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()

        def write(ctx: WriteContext) -> TaskRunRecord:
            task = self._running_task(ctx, namespace, task_run_id, "complete")
            done = replace(task, result=result, compensation=compensation or task.compensation)
            self._require_fits_task(done, weights.COPY_BYTES)  # a retry may carry it over
            if not run_rows.finish_task(
                ctx.conn,
                task,
                TaskStatus.COMPLETED.value,
                ctx.now,
                result=result,
                compensation=compensation or None,
            ):
                raise _LeaseExpired(task_run_id)
            ctx.emit(
                namespace,
                rules.TASK_EVENTS[TaskStatus.COMPLETED],
                _data(task_id=task.task_id, attempt=task.attempt),
                agent_id=task.agent_id,
                run_id=task.run_id,
                task_run_id=task_run_id,
            )
            return task

        return await self._expiring(namespace, guarded(namespace, replay, write))

    async def fail_task(
        self, namespace: str, task_run_id: str, error: ErrorRecord, replay: Replay | None = None
    ) -> TaskRunRecord | Stored:
        v = Violations()
        check.check_id(v, "task_run_id", task_run_id)
        _check_error(v, error)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()

        def write(ctx: WriteContext) -> TaskRunRecord:
            task = self._running_task(ctx, namespace, task_run_id, "fail")
            status = rules.failure_status(task.cancel_requested)
            stamped = ErrorRecord(
                error.message, error.kind, error.retryable, error.details, ctx.now
            )
            self._require_fits_task(replace(task, error=stamped))  # never copied
            if not run_rows.finish_task(ctx.conn, task, status.value, ctx.now, error=stamped):
                raise _LeaseExpired(task_run_id)
            ctx.emit(
                namespace,
                rules.TASK_EVENTS[status],
                _data(
                    task_id=task.task_id,
                    attempt=task.attempt,
                    error=error.message,
                    error_kind=error.kind,
                    retryable=error.retryable,
                ),
                agent_id=task.agent_id,
                run_id=task.run_id,
                task_run_id=task_run_id,
            )
            return task

        return await self._expiring(namespace, guarded(namespace, replay, write))

    def _require_fits_run(self, record: RunRecord, room: int = 0) -> None:
        """``record`` and ``room`` more bytes fit in one answer (weights.COPY_BYTES,
        weights.END_BYTES)."""
        weight = weights.run(record) + room
        weights.require_fits(f"workflow run {record.run_id!r}", weight, self.page_bytes)

    def _require_fits_task(self, record: TaskRunRecord, room: int = 0) -> None:
        weight = weights.task_run(record) + room
        weights.require_fits(f"task run {record.task_run_id!r}", weight, self.page_bytes)

    def _running_task(
        self, ctx: WriteContext, namespace: str, task_run_id: str, action: str
    ) -> TaskRunRecord:
        task = run_rows.get_task(ctx.conn, namespace, task_run_id, for_update=True)
        if task is None:
            raise _task_not_found(task_run_id)
        rules.require_task_running(task_run_id, task.status, action)
        if rules.lease_expired(task.lease_expires_at, ctx.now):
            raise _LeaseExpired(task_run_id)
        return task

    async def _expiring(self, namespace: str, write: Callable[[WriteContext], T]) -> T:
        """Run a task-run write; if the lease had run out, finish the task run first and say so.

        A late heartbeat or result never revives a task run: it is timed out on the
        spot, as the sweeper would have done a moment later.
        """
        try:
            return await self.db.write(write)
        except _LeaseExpired as expired:
            task_run_id = expired.task_run_id

        def expire(ctx: WriteContext) -> TaskRunRecord | None:
            mark_expired(ctx, namespace, task_run_id, interrupted=False)
            return run_rows.get_task(ctx.conn, namespace, task_run_id)

        task = await self.db.write(expire)
        status = task.status if task is not None else TaskStatus.TIMED_OUT.value
        message = task.error.message if task is not None and task.error else "its lease expired"
        raise FailedPrecondition(
            f"task run {task_run_id!r} is {status}: {message}",
            reason="INVALID_TASK_STATUS",
            subject=f"task-runs/{task_run_id}",
            metadata={"current_status": status, "required_status": TaskStatus.RUNNING.value},
        )

    async def get_task(self, namespace: str, task_run_id: str) -> TaskRunRecord:
        v = Violations()
        check.check_id(v, "task_run_id", task_run_id)
        v.raise_if_any()
        record = await self.db.read(lambda conn: run_rows.get_task(conn, namespace, task_run_id))
        if record is None:
            raise _task_not_found(task_run_id)
        return record

    async def list_tasks(
        self,
        namespace: str,
        *,
        run_id: str,
        agent_id: str,
        status: str | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[TaskRunRecord], str]:
        v = Violations()
        if not run_id and not agent_id:
            v.add("run_id", "run_id or agent_id is required")
        check.check_id(v, "run_id", run_id, required=False)
        check.check_id(v, "agent_id", agent_id, required=False)
        size = check.check_page_size(v, page_size)
        v.raise_if_any()
        digest = paging.filter_digest(namespace, "tasks", run_id, agent_id, status)
        cursor = paging.decode(page_token, digest, (int,))
        rows = await self.db.read(
            lambda conn: run_rows.list_tasks(
                conn,
                namespace,
                run_id=run_id or None,
                agent_id=agent_id or None,
                status=status,
                after_seq=cursor[0] if cursor else None,
                limit=size,
                budget=self.page_bytes,
            )
        )
        return _page(rows, size, digest, lambda r: [r.seq], weights.task_run, self.page_bytes)

    async def agent_history(
        self, namespace: str, agent_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[TaskRunRecord], str]:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        size = check.check_page_size(v, page_size)
        v.raise_if_any()
        digest = paging.filter_digest(namespace, "history", agent_id)
        cursor = paging.decode(page_token, digest, (int,))

        def read(conn: Connection) -> list[TaskRunRecord]:
            if agent_rows.get(conn, namespace, agent_id) is None:
                raise NotFound(f"agent {agent_id!r} does not exist")
            return run_rows.list_tasks(
                conn,
                namespace,
                run_id=None,
                agent_id=agent_id,
                status=None,
                after_seq=cursor[0] if cursor else None,
                limit=size,
                newest_first=True,
                executed_only=True,
                budget=self.page_bytes,
            )

        rows = await self.db.read(read)
        return _page(rows, size, digest, lambda r: [r.seq], weights.task_run, self.page_bytes)

    @staticmethod
    def _require_live_agent(conn: Connection, namespace: str, agent_id: str) -> None:
        agent = agent_rows.get(conn, namespace, agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id!r} does not exist")
        if agent.status == "TERMINATED":
            raise FailedPrecondition(
                f"agent {agent_id!r} is TERMINATED; it can no longer run workflows or tasks",
                reason="AGENT_TERMINATED",
                subject=f"agents/{agent_id}",
                metadata={"current_status": agent.status},
            )

    # -- the event log ------------------------------------------------
    async def append_events(
        self, namespace: str, events: Sequence[NewEvent], replay: Replay | None = None
    ) -> tuple[int, int] | Stored:
        """Append client events atomically; returns the first and last sequence."""
        v = Violations()
        if not events:
            v.add("events", "at least one event is required")
        elif len(events) > rules.MAX_EVENTS_PER_APPEND:
            v.add(
                "events",
                f"at most {rules.MAX_EVENTS_PER_APPEND} events per call (got {len(events)})",
            )
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()
        # Column by column, looping in C: per event, Python runs only the payload check.
        kinds = set(map(_TYPE, events))
        run_ids = set(map(_RUN_ID, events))
        task_run_ids = set(map(_TASK_RUN_ID, events))
        datas = list(map(_DATA, events))
        if not _small_json_objects(datas):
            for i, data in enumerate(datas):
                if not _small_json_object(data):
                    _check_event_data(v, f"events[{i}].data_json", data)
        if "" in run_ids and "" in task_run_ids:
            for i, (_, _, _, run_id, task_run_id) in enumerate(events):
                if not run_id and not task_run_id:
                    v.add(f"events[{i}]", "run_id or task_run_id is required")
        run_ids.discard("")
        task_run_ids.discard("")
        valid_types = self._valid_types
        if not kinds <= valid_types:
            for i, (kind, *_) in enumerate(events):
                if kind not in valid_types:
                    rules.check_event_type(v, f"events[{i}].type", kind)
            if not v.items and len(valid_types) < _TYPE_CACHE_LIMIT:
                valid_types.update(kinds)
        for run_id in run_ids:
            check.check_id(v, "events[].run_id", run_id)
        for task_run_id in task_run_ids:
            check.check_id(v, "events[].task_run_id", task_run_id)
        v.raise_if_any()
        run_list, task_list = list(run_ids), list(task_run_ids)
        one_run = len(run_list) == 1 and not task_list  # the usual batch
        if one_run:  # columns for WriteContext.emit_run, built here rather than in the writer
            types = list(map(_TYPE, events))
            payloads = [data or b"{}" for data in datas] if b"" in datas else datas
            times = list(map(_CLIENT_TIME, events))

        def write(ctx: WriteContext) -> tuple[int, int]:
            runs, tasks = event_log.owners(ctx.conn, namespace, run_list, task_list)
            for run_id in run_list:
                if run_id not in runs:
                    raise _run_not_found(run_id)
            for task_run_id in task_list:
                if task_run_id not in tasks:
                    raise _task_not_found(task_run_id)
            if one_run:
                run_id = run_list[0]
                first = ctx.emit_run(
                    namespace, types, payloads, times, agent_id=runs[run_id], run_id=run_id
                )
                return first, first + len(events) - 1
            now = ctx.now
            if not tasks:  # the common batch: every event names its run
                drafts = [
                    EventDraft(
                        namespace, 0, kind, data or b"{}", now, runs[run_id], run_id, None, at
                    )
                    for kind, data, at, run_id, _ in events
                ]
            else:
                drafts = [
                    _task_draft(namespace, now, i, e, runs, tasks) for i, e in enumerate(events)
                ]
            first = ctx.emit_many(namespace, drafts)
            return first, first + len(drafts) - 1

        return await self.db.write(guarded(namespace, replay, write))

    async def list_events(
        self,
        namespace: str,
        flt: EventFilter,
        *,
        after: int,
        start: int | None,
        end: int | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[EventRecord], str]:
        v = Violations()
        _check_filter(v, flt)
        if after < 0:
            v.add("after_sequence", "must not be negative")
        size = check.check_page_size(v, page_size)
        v.raise_if_any()
        digest = paging.filter_digest(
            namespace,
            "events",
            flt.agent_id,
            flt.run_id,
            flt.task_run_id,
            sorted(flt.types),
            after,
            start,
            end,
        )
        cursor = paging.decode(page_token, digest, (int,))
        position = cursor[0] if cursor else after
        rows = await self.db.read(
            lambda conn: event_log.list_page(
                conn, namespace, flt, after=position, start=start, end=end, limit=size + 1
            )
        )
        return _page(rows, size, digest, lambda r: [r.sequence], weights.event, self.page_bytes)

    async def subscribe(
        self,
        namespace: str,
        flt: EventFilter,
        *,
        after: int,
        from_head: bool,
        keepalive: float,
    ) -> AsyncGenerator[list[Any] | Keepalive, None]:
        """Matching events after ``after`` (or the head), then live ones; Keepalive when idle.

        Yields lists of events encoded by the bus's encoder (live events are encoded once
        for all subscribers), to be sent in order, and ``Keepalive`` after ``keepalive``
        seconds without one.

        Exactly once and in order: ``position`` only grows, and everything yielded lies
        beyond it. Nothing is missed: the subscription is armed before the catch-up read
        that ends at a committed head, and the bus publishes everything after the head
        it had when armed, in order.
        """
        v = Violations()
        _check_filter(v, flt)
        if after < 0:
            v.add("after_sequence", "must not be negative")
        if from_head and after:
            v.add("from_head", "cannot be combined with after_sequence; set one of them")
        if keepalive and not 1 <= keepalive <= 300:
            v.add("keepalive_interval", f"must be between 1 s and 300 s (got {keepalive:g} s)")
        v.raise_if_any()
        interval = keepalive or DEFAULT_KEEPALIVE
        bus = self.bus
        encode = bus.encode
        observe_lag = metrics.SUBSCRIBER_LAG.observe
        sub = await bus.subscribe(namespace, flt)
        # One timer per interval, not one per wait: a live stream waits once per event.
        idle = _IdleTimer(sub.wakeup, interval)
        clock = idle.clock
        try:
            position = after
            if from_head:
                position = await self.db.read(lambda conn: event_log.head(conn, namespace))
            while not bus.closed:
                if not sub.armed:
                    # Catch up from the log; arm once nearly there, then read to the head again.
                    caught_up = False
                    while not bus.closed:
                        records, position, at_head = await self.db.read(
                            functools.partial(
                                event_log.catch_up,
                                namespace=namespace,
                                flt=flt,
                                after=position,
                                limit=CATCH_UP_PAGE,
                                budget=CATCH_UP_BYTES,
                            )
                        )
                        if records:
                            idle.last = clock()
                            yield [encode(record) for record in records]
                        if at_head:
                            if caught_up or sub.armed:
                                break
                            bus.arm(sub)
                            caught_up = True
                    continue
                buffer = sub.buffer
                if buffer:
                    batch: list[Any] = []
                    while buffer:
                        sequence, message = buffer.popleft()
                        if sequence > position:
                            position = sequence
                            batch.append(message)
                    if batch:
                        idle.last = clock()
                        yield batch
                    # How far behind the newest published event this delivery left us.
                    observe_lag(max(0, (bus.head_of(namespace) or position) - position))
                if not sub.armed or bus.closed:
                    continue
                sub.wakeup.clear()
                if buffer:
                    continue
                if idle.due:
                    idle.due = False
                    # The keepalive's head is this stream's watermark: with the buffer
                    # empty, every event the bus published (or the catch-up read) went out.
                    # Not the log's head, which may hold events still on their way here
                    # (another replica's, a missed notification): a client resuming from
                    # that would skip them.
                    mark = max(position, bus.head_of(namespace) or 0)
                    head = await self.db.read(lambda conn: event_log.head(conn, namespace))
                    bus.saw_head(namespace, head)  # repairs a missed notification
                    yield Keepalive(mark)
                    continue
                await sub.wakeup.wait()
        finally:
            idle.cancel()
            bus.unsubscribe(sub)


def _check_filter(v: Violations, flt: EventFilter) -> None:
    check.check_id(v, "filter.agent_id", flt.agent_id, required=False)
    check.check_id(v, "filter.run_id", flt.run_id, required=False)
    check.check_id(v, "filter.task_run_id", flt.task_run_id, required=False)
    if len(flt.types) > rules.MAX_FILTER_TYPES:
        v.add("filter.types", f"at most {rules.MAX_FILTER_TYPES} types (got {len(flt.types)})")
    for kind in flt.types:
        if not rules.EVENT_TYPE_PATTERN.fullmatch(kind):
            v.add("filter.types", f"{kind[:64]!r} is not a valid event type")


def _task_draft(
    namespace: str,
    now: int,
    index: int,
    event: NewEvent,
    runs: dict[str, str | None],
    tasks: dict[str, tuple[str, str]],
) -> EventDraft:
    """An event's draft, its run and agent taken from its task run when it names one."""
    kind, data, at, run_id, task_run_id = event
    if not task_run_id:
        return EventDraft(namespace, 0, kind, data or b"{}", now, runs[run_id], run_id, None, at)
    owner_run, agent_id = tasks[task_run_id]
    if run_id and run_id != owner_run:
        raise InvalidArgument.one(
            f"events[{index}].run_id",
            f"task run {task_run_id!r} belongs to run {owner_run!r}, not {run_id!r}",
        )
    return EventDraft(namespace, 0, kind, data or b"{}", now, agent_id, owner_run, task_run_id, at)


def _small_json_objects(datas: list[bytes]) -> bool:
    """True if every payload is certainly valid (see :func:`_small_json_object`), checked in C
    loops with orjson (~5k instructions per 200 B payload against ~10k). False sends the batch
    to the per-payload checks, which decide and say why: orjson refuses some JSON that
    Python's json accepts (e.g. 1e999, lone surrogate escapes), never the other way round."""
    if b"" in datas:
        datas = list(filter(None, datas))  # empty means {}
        if not datas:
            return True
    if max(map(len, datas)) > rules.MAX_EVENT_DATA:
        return False
    try:  # each parsed value is dropped as soon as its type is known
        shapes = set(map(type, map(_orjson_loads, datas)))
    except ValueError:  # orjson.JSONDecodeError
        return False
    if shapes != _ONLY_DICT:
        return False
    joined = b"".join(datas)
    if b"[" in joined or joined.count(b"{") > len(datas):  # maybe nested: bound the depth
        return all(d.count(b"{") + d.count(b"[") <= check.MAX_JSON_DEPTH for d in datas)
    return True


_ONLY_DICT = {dict}


def _small_json_object(raw: bytes) -> bool:
    """True if ``raw`` is certainly a valid event payload: empty (meaning ``{}``) or a JSON
    object within the size and depth limits, with no surrounding whitespace. False sends it
    to :func:`_check_event_data`, which decides and says why. The common payload costs one
    C scan (~1 µs)."""
    if not raw:
        return True
    if len(raw) > rules.MAX_EVENT_DATA or raw[0] != 0x7B:  # "{"
        return False
    try:
        text = raw.decode("utf-8")
        end = _SCAN(text, 0)[1]
    except (ValueError, StopIteration, RecursionError):  # UnicodeDecodeError included
        return False
    if end != len(text):
        return False
    if "[" in text or "{" in text[1:]:  # maybe nested: bound the depth by counting
        return text.count("{") + text.count("[") <= check.MAX_JSON_DEPTH
    return True


def _check_event_data(v: Violations, field: str, raw: bytes) -> None:
    """A JSON object up to 64 KiB: the cheap path for the common small, shallow event."""
    if len(raw) > rules.MAX_EVENT_DATA:
        v.add(field, f"must be at most {rules.MAX_EVENT_DATA} bytes (got {len(raw)})")
        return
    if raw.count(b"{") + raw.count(b"[") > check.MAX_JSON_DEPTH:
        check.parse_json(v, field, raw, limit=rules.MAX_EVENT_DATA)  # counts nesting properly
        return
    try:
        value = _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        v.add(field, f"must be UTF-8 encoded JSON (invalid byte at offset {error.start})")
        return
    except ValueError as error:
        v.add(field, f"must be valid JSON ({error})")
        return
    if not isinstance(value, dict):
        v.add(field, f"must be a JSON object, not {type(value).__name__}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)  # built once: json.loads(**kw) is not
# (value, end) of the JSON value at an offset; the C scanner (typeshed mistypes its argument)
_SCAN = json.scanner.make_scanner(cast(Any, _DECODER))
_orjson_loads = orjson.loads
