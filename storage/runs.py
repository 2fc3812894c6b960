"""Workflow-run and task-run rows.

Status changes are conditional UPDATEs (``WHERE status = <expected>``): the row count
says whether this write won, so two replicas (or a worker and the lease sweeper)
never both finish the same run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from stateward.storage import labels as label_rows
from stateward.storage import pages, schema
from stateward.storage.records import ErrorRecord, dump_labels, error_columns, error_from_row

w = schema.workflow_runs
t = schema.task_runs
_RUN_SIZE = pages.Sizes(w.c.input, w.c.result, w.c.labels, w.c.error_message, w.c.error_details)
_TASK_SIZE = pages.Sizes(
    t.c.input, t.c.result, t.c.progress, t.c.compensation, t.c.error_message, t.c.error_details
)


@dataclass(slots=True)
class RunRecord:
    namespace: str
    run_id: str
    workflow_name: str
    agent_id: str | None
    status: str
    input: bytes
    labels: dict[str, str]
    attempt: int
    root_run_id: str
    created_at: int
    updated_at: int
    started_at: int | None = None
    ended_at: int | None = None
    result: bytes | None = None
    error: ErrorRecord | None = None
    retry_of_run_id: str | None = None
    cancel_requested: bool = False
    heartbeat_timeout_us: int | None = None
    last_heartbeat_at: int | None = None
    lease_expires_at: int | None = None  # None once the run has ended


@dataclass(slots=True)
class TaskRunRecord:
    namespace: str
    task_run_id: str
    run_id: str
    task_id: str
    agent_id: str
    attempt: int
    status: str
    input: bytes
    started_at: int
    seq: int
    timeout_us: int | None = None
    heartbeat_timeout_us: int | None = None
    lease_expires_at: int | None = None
    last_heartbeat_at: int | None = None
    ended_at: int | None = None
    result: bytes | None = None
    error: ErrorRecord | None = None
    progress: bytes | None = None
    compensation: bytes | None = None
    compensation_done_at: int | None = None
    carried_from: str | None = None
    cancel_requested: bool = False


def run_from_row(row: Any) -> RunRecord:
    return RunRecord(
        namespace=row.namespace,
        run_id=row.run_id,
        workflow_name=row.workflow_name,
        agent_id=row.agent_id,
        status=row.status,
        input=row.input,
        labels=json.loads(row.labels),
        attempt=row.attempt,
        root_run_id=row.root_run_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        result=row.result,
        error=error_from_row(row),
        retry_of_run_id=row.retry_of_run_id,
        cancel_requested=bool(row.cancel_requested),
        heartbeat_timeout_us=row.heartbeat_timeout_us,
        last_heartbeat_at=row.last_heartbeat_at,
        lease_expires_at=row.lease_expires_at,
    )


def task_from_row(row: Any) -> TaskRunRecord:
    return TaskRunRecord(
        namespace=row.namespace,
        task_run_id=row.task_run_id,
        run_id=row.run_id,
        task_id=row.task_id,
        agent_id=row.agent_id,
        attempt=row.attempt,
        status=row.status,
        input=row.input,
        started_at=row.started_at,
        seq=row.seq,
        timeout_us=row.timeout_us,
        heartbeat_timeout_us=row.heartbeat_timeout_us,
        lease_expires_at=row.lease_expires_at,
        last_heartbeat_at=row.last_heartbeat_at,
        ended_at=row.ended_at,
        result=row.result,
        error=error_from_row(row),
        progress=row.progress,
        compensation=row.compensation,
        compensation_done_at=row.compensation_done_at,
        carried_from=row.carried_from,
        cancel_requested=bool(row.cancel_requested),
    )


# -- workflow runs ----------------------------------------------------------------------------
def get_run(
    conn: Connection, namespace: str, run_id: str, *, for_update: bool = False
) -> RunRecord | None:
    query = select(w).where(w.c.namespace == namespace, w.c.run_id == run_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return run_from_row(row) if row is not None else None


def insert_run(conn: Connection, record: RunRecord) -> None:
    conn.execute(
        insert(w).values(
            namespace=record.namespace,
            run_id=record.run_id,
            workflow_name=record.workflow_name,
            agent_id=record.agent_id,
            status=record.status,
            input=record.input,
            result=record.result,
            labels=dump_labels(record.labels),
            attempt=record.attempt,
            retry_of_run_id=record.retry_of_run_id,
            root_run_id=record.root_run_id,
            cancel_requested=record.cancel_requested,
            created_at=record.created_at,
            started_at=record.started_at,
            ended_at=record.ended_at,
            updated_at=record.updated_at,
            heartbeat_timeout_us=record.heartbeat_timeout_us,
            last_heartbeat_at=record.last_heartbeat_at,
            lease_expires_at=record.lease_expires_at,
            **error_columns(record.error),
        )
    )
    label_rows.replace(conn, record.namespace, "run", record.run_id, record.labels)


def finish_run(
    conn: Connection,
    record: RunRecord,
    status: str,
    now: int,
    *,
    result: bytes | None = None,
    error: ErrorRecord | None = None,
    cancel_requested: bool | None = None,
) -> bool:
    """Move a run from its current status to a final one; False if another write got there first."""
    values: dict[str, Any] = {
        "status": status,
        "ended_at": now,
        "updated_at": now,
        "lease_expires_at": None,
    }
    if result is not None:
        values["result"] = result
    if error is not None:
        values.update(error_columns(error))
    if cancel_requested is not None:
        values["cancel_requested"] = cancel_requested
    outcome = conn.execute(
        update(w)
        .where(
            w.c.namespace == record.namespace,
            w.c.run_id == record.run_id,
            w.c.status == record.status,
        )
        .values(**values)
    )
    if outcome.rowcount != 1:
        return False
    record.status, record.ended_at, record.updated_at = status, now, now
    record.lease_expires_at = None
    if result is not None:
        record.result = result
    if error is not None:
        record.error = error
    if cancel_requested is not None:
        record.cancel_requested = cancel_requested
    return True


def renew_run_lease(conn: Connection, record: RunRecord, now: int, lease: int | None) -> bool:
    """Record a heartbeat, only if the run is RUNNING with an unexpired lease."""
    outcome = conn.execute(
        update(w)
        .where(
            w.c.namespace == record.namespace,
            w.c.run_id == record.run_id,
            w.c.status == "RUNNING",
            or_(w.c.lease_expires_at.is_(None), w.c.lease_expires_at >= now),
        )
        .values(last_heartbeat_at=now, lease_expires_at=lease, updated_at=now)
    )
    if outcome.rowcount != 1:
        return False
    record.last_heartbeat_at, record.lease_expires_at, record.updated_at = now, lease, now
    return True


def list_runs(
    conn: Connection,
    namespace: str,
    *,
    workflow_name: str | None,
    status: str | None,
    labels: dict[str, str],
    agent_id: str | None,
    created_from: int | None,
    created_to: int | None,
    root_run_id: str | None,
    before: tuple[int, str] | None,
    limit: int,
    budget: int | None = None,
) -> pages.Rows[RunRecord]:
    """Runs newest first (created_at, run_id descending), after the keyset ``before``;
    ``limit + 1`` rows tell if more follow, fewer when ``budget`` bytes of them do
    (storage/pages.py)."""
    query = select(w).where(w.c.namespace == namespace)
    if workflow_name:
        query = query.where(w.c.workflow_name == workflow_name)
    if status:
        query = query.where(w.c.status == status)
    if agent_id:
        query = query.where(w.c.agent_id == agent_id)
    if root_run_id:
        query = query.where(w.c.root_run_id == root_run_id)
    if created_from is not None:
        query = query.where(w.c.created_at >= created_from)
    if created_to is not None:
        query = query.where(w.c.created_at < created_to)
    if before is not None:
        created, run_id = before
        query = query.where(
            or_(w.c.created_at < created, and_(w.c.created_at == created, w.c.run_id < run_id))
        )
    query = query.where(*label_rows.matching(namespace, "run", w.c.run_id, labels))
    query = query.order_by(w.c.created_at.desc(), w.c.run_id.desc())
    return pages.read(conn, query, _RUN_SIZE, limit + 1, budget, run_from_row)


# -- task runs -----------------------------------------------------------------------------------
def get_task(
    conn: Connection, namespace: str, task_run_id: str, *, for_update: bool = False
) -> TaskRunRecord | None:
    query = select(t).where(t.c.namespace == namespace, t.c.task_run_id == task_run_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return task_from_row(row) if row is not None else None


def insert_task(conn: Connection, record: TaskRunRecord) -> None:
    conn.execute(
        insert(t).values(
            namespace=record.namespace,
            task_run_id=record.task_run_id,
            run_id=record.run_id,
            task_id=record.task_id,
            agent_id=record.agent_id,
            attempt=record.attempt,
            status=record.status,
            input=record.input,
            result=record.result,
            timeout_us=record.timeout_us,
            heartbeat_timeout_us=record.heartbeat_timeout_us,
            progress=record.progress,
            compensation=record.compensation,
            carried_from=record.carried_from,
            cancel_requested=record.cancel_requested,
            started_at=record.started_at,
            ended_at=record.ended_at,
            last_heartbeat_at=record.last_heartbeat_at,
            lease_expires_at=record.lease_expires_at,
            seq=record.seq,
            **error_columns(record.error),
        )
    )


def max_attempt(conn: Connection, namespace: str, root_run_id: str, task_id: str) -> int:
    """The highest attempt of ``task_id`` in any run of the chain rooted at ``root_run_id``."""
    query = (
        select(func.max(t.c.attempt))
        .select_from(t.join(w, and_(w.c.namespace == t.c.namespace, w.c.run_id == t.c.run_id)))
        .where(w.c.namespace == namespace, w.c.root_run_id == root_run_id, t.c.task_id == task_id)
    )
    return int(conn.execute(query).scalar() or 0)


def finish_task(
    conn: Connection,
    record: TaskRunRecord,
    status: str,
    now: int,
    *,
    result: bytes | None = None,
    compensation: bytes | None = None,
    error: ErrorRecord | None = None,
) -> bool:
    """RUNNING -> ``status``, only if still RUNNING with an unexpired lease."""
    values: dict[str, Any] = {"status": status, "ended_at": now, "lease_expires_at": None}
    if result is not None:
        values["result"] = result
    if compensation is not None:
        values["compensation"] = compensation
    if error is not None:
        values.update(error_columns(error))
    outcome = conn.execute(
        update(t)
        .where(
            t.c.namespace == record.namespace,
            t.c.task_run_id == record.task_run_id,
            t.c.status == "RUNNING",
            or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at >= now),
        )
        .values(**values)
    )
    if outcome.rowcount != 1:
        return False
    record.status, record.ended_at, record.lease_expires_at = status, now, None
    if result is not None:
        record.result = result
    if compensation is not None:
        record.compensation = compensation
    if error is not None:
        record.error = error
    return True


def renew_lease(
    conn: Connection, record: TaskRunRecord, now: int, lease: int | None, progress: bytes | None
) -> bool:
    """Record a heartbeat, only if the task is RUNNING with an unexpired lease."""
    values: dict[str, Any] = {"last_heartbeat_at": now, "lease_expires_at": lease}
    if progress is not None:
        values["progress"] = progress
    outcome = conn.execute(
        update(t)
        .where(
            t.c.namespace == record.namespace,
            t.c.task_run_id == record.task_run_id,
            t.c.status == "RUNNING",
            or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at >= now),
        )
        .values(**values)
    )
    if outcome.rowcount != 1:
        return False
    record.last_heartbeat_at, record.lease_expires_at = now, lease
    if progress is not None:
        record.progress = progress
    return True


def request_cancel(conn: Connection, namespace: str, run_id: str) -> list[TaskRunRecord]:
    """Flag the run's RUNNING task runs for cancellation; returns them."""
    rows = conn.execute(
        select(t).where(t.c.namespace == namespace, t.c.run_id == run_id, t.c.status == "RUNNING")
    ).all()
    if rows:
        conn.execute(
            update(t)
            .where(t.c.namespace == namespace, t.c.run_id == run_id, t.c.status == "RUNNING")
            .values(cancel_requested=True)
        )
    tasks = [task_from_row(row) for row in rows]
    for task in tasks:
        task.cancel_requested = True
    return tasks


def list_tasks(
    conn: Connection,
    namespace: str,
    *,
    run_id: str | None,
    agent_id: str | None,
    status: str | None,
    after_seq: int | None,
    limit: int,
    newest_first: bool = False,
    executed_only: bool = False,
    budget: int | None = None,
) -> pages.Rows[TaskRunRecord]:
    """Task runs in creation order (or newest first), keyset-paged on ``seq``; ``limit + 1``
    rows tell if more follow, fewer when ``budget`` bytes of them do (storage/pages.py).
    ``executed_only`` leaves out carried-over copies, whose work their originals did."""
    query = select(t).where(t.c.namespace == namespace)
    if executed_only:
        query = query.where(t.c.carried_from.is_(None))
    if run_id:
        query = query.where(t.c.run_id == run_id)
    if agent_id:
        query = query.where(t.c.agent_id == agent_id)
    if status:
        query = query.where(t.c.status == status)
    if after_seq is not None:
        query = query.where(t.c.seq < after_seq if newest_first else t.c.seq > after_seq)
    query = query.order_by(t.c.seq.desc() if newest_first else t.c.seq)
    return pages.read(conn, query, _TASK_SIZE, limit + 1, budget, task_from_row)


# -- leases --------------------------------------------------------------------------------------
def expired_tasks(conn: Connection, before: int, limit: int) -> list[TaskRunRecord]:
    """RUNNING task runs in any namespace whose lease ran out before ``before``."""
    rows = conn.execute(
        select(t)
        .where(t.c.status == "RUNNING", t.c.lease_expires_at < before)
        .order_by(t.c.lease_expires_at)
        .limit(limit)
    )
    return [task_from_row(row) for row in rows]


def expired_runs(conn: Connection, before: int, limit: int) -> list[tuple[str, str]]:
    """(namespace, run_id) of RUNNING runs in any namespace whose lease ran out before
    ``before``, soonest expired first (the partial index of live leases)."""
    rows = conn.execute(
        select(w.c.namespace, w.c.run_id)
        .where(
            w.c.lease_expires_at.is_not(None),
            w.c.lease_expires_at < before,
            w.c.status == "RUNNING",
        )
        .order_by(w.c.lease_expires_at)
        .limit(limit)
    )
    return [(row.namespace, row.run_id) for row in rows]


def expire_run(
    conn: Connection, record: RunRecord, status: str, now: int, error: ErrorRecord
) -> bool:
    """RUNNING -> ``status`` for a run whose lease is still expired; exactly one caller wins."""
    outcome = conn.execute(
        update(w)
        .where(
            w.c.namespace == record.namespace,
            w.c.run_id == record.run_id,
            w.c.status == "RUNNING",
            w.c.lease_expires_at < now,
        )
        .values(
            status=status,
            ended_at=now,
            updated_at=now,
            lease_expires_at=None,
            **error_columns(error),
        )
    )
    if outcome.rowcount != 1:
        return False
    record.status, record.ended_at, record.updated_at = status, now, now
    record.lease_expires_at, record.error = None, error
    return True


def expire_task(
    conn: Connection, record: TaskRunRecord, status: str, now: int, error: ErrorRecord
) -> bool:
    """RUNNING -> ``status`` for a lease that is still expired; exactly one caller wins."""
    outcome = conn.execute(
        update(t)
        .where(
            t.c.namespace == record.namespace,
            t.c.task_run_id == record.task_run_id,
            t.c.status == "RUNNING",
            t.c.lease_expires_at < now,
        )
        .values(status=status, ended_at=now, **error_columns(error))
    )
    if outcome.rowcount != 1:
        return False
    record.status, record.ended_at, record.error = status, now, error
    return True
