"""Lease expiry: the periodic sweeper and the start-up interruption scan.

Both finish a task run with a conditional UPDATE (``status = 'RUNNING' AND
lease_expires_at < now``), so with any number of replicas sweeping at once, and a
worker finishing at the same moment, exactly one write wins and one event is emitted.

- The sweeper (every ``sweep_interval``) marks expired task runs TIMED_OUT
  (CANCELLED if their run was cancelled: the worker stopped without reporting).
  Their workflow run stays RUNNING: whoever drives it decides to retry or fail.
- The start-up scan (before the server reports SERVING) marks task runs whose lease
  expired while no server was sweeping INTERRUPTED, and their RUNNING workflow runs
  INTERRUPTED too. "While no server was sweeping" means: on PostgreSQL, longer ago
  than a live replica's sweeper could have missed (``interruption_grace_us``); on
  SQLite, where this is the only server, any time before the scan.
- Workflow runs with a lease (a heartbeat timeout) whose driver stopped heartbeating
  become INTERRUPTED in both passes, and their RUNNING task runs are asked to cancel.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from datetime import UTC, datetime

from stateward.server import metrics
from stateward.server.domain import runs as rules
from stateward.server.domain.errors import FailedPrecondition
from stateward.server.domain.runs import RunStatus, TaskStatus
from stateward.storage import Database, WriteContext, now_us
from stateward.storage import runs as run_rows
from stateward.storage.records import ErrorRecord
from stateward.storage.runs import RunRecord, TaskRunRecord

log = logging.getLogger(__name__)

BATCH = 500


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat(timespec="milliseconds")


def _data(**fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def mark_expired(
    ctx: WriteContext, namespace: str, task_run_id: str, *, interrupted: bool
) -> TaskRunRecord | None:
    """Finish one task run whose lease ran out; None if it is no longer RUNNING and expired."""
    task = run_rows.get_task(ctx.conn, namespace, task_run_id, for_update=True)
    if task is None or task.status != TaskStatus.RUNNING.value:
        return None
    if not rules.lease_expired(task.lease_expires_at, ctx.now):
        return None
    assert task.lease_expires_at is not None
    why = rules.expiry_message(
        task.started_at, task.timeout_us, task.heartbeat_timeout_us, task.lease_expires_at
    )
    if interrupted:
        status = TaskStatus.INTERRUPTED
        message = (
            f"interrupted: the lease expired at {_iso(task.lease_expires_at)} while no "
            f"Stateward server was running ({why})"
        )
    else:
        status = rules.expiry_status(task.cancel_requested)
        message = (
            why
            if status is TaskStatus.TIMED_OUT
            else (f"cancelled with its workflow run; the worker stopped without reporting ({why})")
        )
    error = ErrorRecord(message, rules.ERROR_KIND_TIMEOUT, True, b"", ctx.now)
    if not run_rows.expire_task(ctx.conn, task, status.value, ctx.now, error):
        return None
    ctx.emit(
        namespace,
        rules.TASK_EVENTS[status],
        _data(
            task_id=task.task_id,
            attempt=task.attempt,
            error=message,
            error_kind=rules.ERROR_KIND_TIMEOUT,
        ),
        agent_id=task.agent_id,
        run_id=task.run_id,
        task_run_id=task.task_run_id,
    )
    return task


def interrupt_run(ctx: WriteContext, namespace: str, run_id: str, cause: TaskRunRecord) -> bool:
    """RUNNING -> INTERRUPTED for the run of an interrupted task run."""
    run = run_rows.get_run(ctx.conn, namespace, run_id, for_update=True)
    if run is None or run.status != RunStatus.RUNNING.value:
        return False
    message = (
        f"interrupted: task run {cause.task_run_id!r} (task {cause.task_id!r}) lost its "
        "lease while no Stateward server was running"
    )
    error = ErrorRecord(message, rules.ERROR_KIND_TIMEOUT, True, b"", ctx.now)
    if not run_rows.finish_run(ctx.conn, run, RunStatus.INTERRUPTED.value, ctx.now, error=error):
        return False
    # The run is over: its task runs still alive stop on their next heartbeat, rather
    # than run on beside the retry's attempts of the same tasks.
    flagged = run_rows.request_cancel(ctx.conn, namespace, run_id)
    ctx.emit(
        namespace,
        rules.RUN_EVENTS[RunStatus.INTERRUPTED],
        _data(
            error=message,
            task_run_id=cause.task_run_id,
            cancel_requested_task_runs=len(flagged),
        ),
        agent_id=run.agent_id,
        run_id=run_id,
    )
    return True


def expire_run(
    ctx: WriteContext, namespace: str, run_id: str, *, interrupted: bool
) -> RunRecord | None:
    """RUNNING -> INTERRUPTED for a run whose lease ran out (its driver stopped
    heartbeating); None if it is no longer RUNNING with an expired lease."""
    run = run_rows.get_run(ctx.conn, namespace, run_id, for_update=True)
    if run is None or run.status != RunStatus.RUNNING.value:
        return None
    expired_at = run.lease_expires_at
    if expired_at is None or not rules.lease_expired(expired_at, ctx.now):
        return None
    message = rules.run_expiry_message(run.heartbeat_timeout_us)
    if interrupted:
        message = (
            f"interrupted: the run's lease expired at {_iso(expired_at)} while no Stateward "
            f"server was running ({message})"
        )
    error = ErrorRecord(message, rules.ERROR_KIND_TIMEOUT, True, b"", ctx.now)
    if not run_rows.expire_run(ctx.conn, run, RunStatus.INTERRUPTED.value, ctx.now, error):
        return None
    # The run is over: its workers learn so on their next heartbeat.
    flagged = run_rows.request_cancel(ctx.conn, namespace, run_id)
    ctx.emit(
        namespace,
        rules.RUN_EVENTS[RunStatus.INTERRUPTED],
        _data(error=message, reason="heartbeat_timeout", cancel_requested_task_runs=len(flagged)),
        agent_id=run.agent_id,
        run_id=run_id,
    )
    return run


class RunLeaseExpired(FailedPrecondition):
    """Raised inside a write to roll it back; the caller then ends the run (interrupt_now)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"workflow run {run_id!r}'s lease expired", reason="LEASE_EXPIRED")
        self.run_id = run_id


def require_live_lease(run: RunRecord, now: int) -> None:
    """A RUNNING run whose lease ran out is over, swept or not: no write revives it."""
    if run.status == RunStatus.RUNNING.value and rules.lease_expired(run.lease_expires_at, now):
        raise RunLeaseExpired(run.run_id)


async def interrupt_now(db: Database, namespace: str, run_id: str) -> RunRecord | None:
    """Do the sweeper's work for one run on the spot; returns the run as it now stands."""

    def write(ctx: WriteContext) -> RunRecord | None:
        expire_run(ctx, namespace, run_id, interrupted=False)
        return run_rows.get_run(ctx.conn, namespace, run_id)

    return await db.write(write)


# One counter child per outcome, bound once.
_SWEPT = {
    status: metrics.SWEEPER_ACTIONS.labels(action=f"task_{status.name.lower()}")
    for status in (TaskStatus.TIMED_OUT, TaskStatus.CANCELLED, TaskStatus.INTERRUPTED)
}
_RUN_INTERRUPTED = metrics.SWEEPER_ACTIONS.labels(action="run_interrupted")


def _count_swept(statuses: list[str], runs_interrupted: int) -> None:
    for status in statuses:
        _SWEPT[TaskStatus(status)].inc()
    if runs_interrupted:
        _RUN_INTERRUPTED.inc(runs_interrupted)


class Sweeper:
    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval

    async def run(self) -> None:
        """Background job: sweep every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("lease sweep failed; retrying next interval", exc_info=True)

    async def sweep(self) -> int:
        """Mark expired task runs TIMED_OUT (or CANCELLED) and expired workflow runs
        INTERRUPTED; returns how many runs of either kind this call marked."""
        tasks = await self._finish_expired(before_offset=0, interrupted=False)
        return tasks + await self._interrupt_expired_runs(before_offset=0, interrupted=False)

    async def scan_interrupted(self) -> None:
        """Start-up hook: leases that ran out while no server was up become INTERRUPTED.

        On SQLite this server is the only one (a lock file refuses a second), so every
        lease that ran out unswept did so while none was sweeping. On PostgreSQL a lease
        that expired within the grace may belong to a live replica's next sweep.
        """
        grace = 0 if self.db.dialect == "sqlite" else rules.interruption_grace_us(self.interval)
        marked = await self._finish_expired(before_offset=grace, interrupted=True)
        if marked:
            log.warning(
                "marked %d task runs INTERRUPTED: their leases expired while no server ran", marked
            )
        runs = await self._interrupt_expired_runs(before_offset=grace, interrupted=True)
        if runs:
            log.warning(
                "marked %d workflow runs INTERRUPTED: their leases expired while no server ran",
                runs,
            )

    async def _interrupt_expired_runs(self, *, before_offset: int, interrupted: bool) -> int:
        total = 0
        while True:
            before = now_us() - before_offset
            found = await self.db.read(
                functools.partial(run_rows.expired_runs, before=before, limit=BATCH)
            )
            if not found:
                return total

            def write(ctx: WriteContext, keys: list[tuple[str, str]] = found) -> int:
                marked = sum(
                    expire_run(ctx, ns, run_id, interrupted=interrupted) is not None
                    for ns, run_id in keys
                )
                if marked:
                    ctx.after_commit(lambda: _RUN_INTERRUPTED.inc(marked))
                return marked

            marked = await self.db.write(write)
            total += marked
            if len(found) < BATCH or marked == 0:
                return total

    async def _finish_expired(self, *, before_offset: int, interrupted: bool) -> int:
        total = 0
        while True:
            before = now_us() - before_offset
            # A read first: an idle sweep costs no write transaction.
            found = await self.db.read(
                functools.partial(run_rows.expired_tasks, before=before, limit=BATCH)
            )
            if not found:
                return total
            keys = [(task.namespace, task.task_run_id) for task in found]

            def write(ctx: WriteContext, keys: list[tuple[str, str]] = keys) -> int:
                marked = [
                    mark_expired(ctx, ns, task_run_id, interrupted=interrupted)
                    for ns, task_run_id in keys
                ]
                finished = [task for task in marked if task is not None]
                runs = 0
                if interrupted:
                    for task in finished:
                        runs += interrupt_run(ctx, task.namespace, task.run_id, task)
                statuses = [task.status for task in finished]
                ctx.after_commit(lambda: _count_swept(statuses, runs))
                return len(finished)

            marked = await self.db.write(write)
            total += marked
            if len(found) < BATCH or marked == 0:
                return total
