"""Queries behind recovery plans, partial re-runs and compensation.

They complement storage/runs.py (owned by execution) with the multi-status and
whole-chain reads that recovery needs, and the one column recovery writes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, exists, func, or_, select, update

from stateward.storage import pages, schema
from stateward.storage.runs import RunRecord, TaskRunRecord, run_from_row, task_from_row

w = schema.workflow_runs
t = schema.task_runs

FAILING = ("FAILED", "TIMED_OUT", "INTERRUPTED")
UNFINISHED_OR_FAILED = ("PENDING", "RUNNING", "FAILED", "INTERRUPTED")


def newest_failure(conn: Connection, namespace: str, agent_id: str) -> TaskRunRecord | None:
    """The agent's most recent failed, timed-out or interrupted task run."""
    row = conn.execute(
        select(t)
        .where(t.c.namespace == namespace, t.c.agent_id == agent_id, t.c.status.in_(FAILING))
        .order_by(t.c.seq.desc())
        .limit(1)
    ).first()
    return task_from_row(row) if row is not None else None


def open_failures(
    conn: Connection, namespace: str, agent_id: str, limit: int = 100
) -> list[TaskRunRecord]:
    """Failing task runs of the agent that still need work, newest first.

    A task run counts when its workflow run is unfinished, FAILED or INTERRUPTED and has
    not been retried (no later attempt in its chain), and no later attempt of the same
    task in that run superseded it.
    """
    run = w.alias("run")
    retry = w.alias("retry")
    newer = t.alias("newer")
    query = (
        select(t)
        .select_from(
            t.join(run, and_(run.c.namespace == t.c.namespace, run.c.run_id == t.c.run_id))
        )
        .where(
            t.c.namespace == namespace,
            t.c.agent_id == agent_id,
            t.c.status.in_(FAILING),
            run.c.status.in_(UNFINISHED_OR_FAILED),
            ~exists().where(
                retry.c.namespace == run.c.namespace,
                retry.c.root_run_id == run.c.root_run_id,
                retry.c.attempt > run.c.attempt,
            ),
            ~exists().where(
                newer.c.namespace == t.c.namespace,
                newer.c.run_id == t.c.run_id,
                newer.c.task_id == t.c.task_id,
                newer.c.seq > t.c.seq,
            ),
        )
        .order_by(t.c.seq.desc())
        .limit(limit)
    )
    return [task_from_row(row) for row in conn.execute(query)]


def latest_attempt(conn: Connection, namespace: str, root_run_id: str) -> RunRecord | None:
    """The newest attempt of the chain rooted at ``root_run_id``."""
    row = conn.execute(
        select(w)
        .where(w.c.namespace == namespace, w.c.root_run_id == root_run_id)
        .order_by(w.c.attempt.desc())
        .limit(1)
    ).first()
    return run_from_row(row) if row is not None else None


def chain_tasks(conn: Connection, namespace: str, root_run_id: str) -> list[TaskRunRecord]:
    """Every task run of every attempt in a chain, in creation order."""
    query = (
        select(t)
        .select_from(t.join(w, and_(w.c.namespace == t.c.namespace, w.c.run_id == t.c.run_id)))
        .where(w.c.namespace == namespace, w.c.root_run_id == root_run_id)
        .order_by(t.c.seq)
    )
    return [task_from_row(row) for row in conn.execute(query)]


def run_tasks(conn: Connection, namespace: str, run_id: str) -> list[TaskRunRecord]:
    """Every task run of one workflow run, in creation order."""
    query = select(t).where(t.c.namespace == namespace, t.c.run_id == run_id).order_by(t.c.seq)
    return [task_from_row(row) for row in conn.execute(query)]


def compensations(
    conn: Connection,
    namespace: str,
    run_id: str,
    *,
    after: tuple[int, int] | None,
    limit: int,
    budget: int,
) -> pages.Rows[TaskRunRecord]:
    """Completed task runs of a run that recorded a compensation, latest completion first
    (ties: latest started first), after the ``(ended_at, seq)`` cursor: ``limit`` rows, or
    those up to the one whose compensations pass ``budget`` bytes (storage/pages.py). The
    records carry what a compensation step shows, not the task runs' documents."""
    ended = func.coalesce(t.c.ended_at, 0)
    query = select(*_STEP).where(
        t.c.namespace == namespace,
        t.c.run_id == run_id,
        t.c.status == "COMPLETED",
        t.c.compensation.is_not(None),
    )
    if after is not None:
        query = query.where(or_(ended < after[0], and_(ended == after[0], t.c.seq < after[1])))
    query = query.order_by(ended.desc(), t.c.seq.desc())
    return pages.read(conn, query, _COMPENSATION_SIZE, limit, budget, _step)


_STEP = (
    t.c.namespace,
    t.c.task_run_id,
    t.c.run_id,
    t.c.task_id,
    t.c.agent_id,
    t.c.attempt,
    t.c.started_at,
    t.c.seq,
    t.c.ended_at,
    t.c.compensation,
    t.c.compensation_done_at,
)
_COMPENSATION_SIZE = pages.Sizes(t.c.compensation)


def _step(row: Any) -> TaskRunRecord:
    return TaskRunRecord(
        namespace=row.namespace,
        task_run_id=row.task_run_id,
        run_id=row.run_id,
        task_id=row.task_id,
        agent_id=row.agent_id,
        attempt=row.attempt,
        status="COMPLETED",
        input=b"",
        started_at=row.started_at,
        seq=row.seq,
        ended_at=row.ended_at,
        compensation=row.compensation,
        compensation_done_at=row.compensation_done_at,
    )


def mark_compensated(conn: Connection, record: TaskRunRecord, now: int) -> bool:
    """Record that the task run's compensation was carried out; False if it already was."""
    outcome = conn.execute(
        update(t)
        .where(
            t.c.namespace == record.namespace,
            t.c.task_run_id == record.task_run_id,
            t.c.compensation_done_at.is_(None),
        )
        .values(compensation_done_at=now)
    )
    if outcome.rowcount != 1:
        return False
    record.compensation_done_at = now
    return True
