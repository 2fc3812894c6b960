"""Agent rows and their audit trail of transitions.

The statements of a transition (read the row, compare-and-set its status, append the
audit row) are plain SQL on the driver's cursor (``storage/sql.py``): they run on every
lifecycle call, where a Core statement would cost ten times more Python.
"""

from __future__ import annotations

import functools
import json
from collections import namedtuple
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, update

from stateward.storage import labels as label_rows
from stateward.storage import pages, schema
from stateward.storage.records import (
    AgentRecord,
    ErrorRecord,
    TransitionRecord,
    dump_labels,
    error_columns,
    error_from_row,
)
from stateward.storage.sql import Sql, run

a = schema.agents
_AGENT_SIZE = pages.Sizes(a.c.config, a.c.labels, a.c.error_message, a.c.error_details)
tr = schema.transitions

_COLUMNS = [column.name for column in a.columns]
_Row = namedtuple("_Row", _COLUMNS)  # type: ignore[misc]  # a driver tuple, read by name
_GET = f"SELECT {', '.join(_COLUMNS)} FROM agents WHERE namespace = ? AND agent_id = ?"
_GET_READ = Sql(_GET)
_GET_LOCK = Sql(_GET, for_update=True)
_ERROR_COLUMNS = tuple(error_columns(None))
_ADD_TRANSITION = Sql(
    "INSERT INTO transitions (namespace, agent_id, from_status, to_status, reason, request_id, "
    "event_sequence, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)


def _status_sets(stamp: str | None, with_error: bool) -> str:
    """``updated_at = ?[, <stamp> = ?][, error columns = ?]`` of a transition's UPDATE."""
    sets = ["updated_at = ?"]
    if stamp:
        assert stamp in a.c, stamp  # a column name from the lifecycle table, never input
        sets.append(f"{stamp} = ?")
    if with_error:
        sets += [f"{name} = ?" for name in _ERROR_COLUMNS]
    return ", ".join(sets)


@functools.cache
def _set_status_sql(stamp: str | None, with_error: bool) -> Sql:
    """Compare-and-set on the generation: one text per stamp column and error."""
    return Sql(
        f"UPDATE agents SET status = ?, generation = ?, {_status_sets(stamp, with_error)} "
        "WHERE namespace = ? AND agent_id = ? AND generation = ?"
    )


@functools.cache
def _move_status_sql(stamp: str | None, with_error: bool) -> Sql:
    """Compare-and-set on the status, returning the updated row."""
    return Sql(
        "UPDATE agents SET status = ?, generation = generation + 1, "
        f"{_status_sets(stamp, with_error)} "
        f"WHERE namespace = ? AND agent_id = ? AND status = ? RETURNING {', '.join(_COLUMNS)}"
    )


def _status_params(now: int, stamp: str | None, error: ErrorRecord | None) -> list[Any]:
    params: list[Any] = [now]
    if stamp:
        params.append(now)
    if error is not None:
        params += error_columns(error).values()
    return params


def _record(row: Any) -> AgentRecord:
    return AgentRecord(
        namespace=row.namespace,
        agent_id=row.agent_id,
        type=row.type,
        config=row.config,
        labels=json.loads(row.labels) if row.labels != "{}" else {},
        status=row.status,
        generation=row.generation,
        state_version=row.state_version,
        state_last_version=row.state_last_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        initialized_at=row.initialized_at,
        activated_at=row.activated_at,
        paused_at=row.paused_at,
        terminated_at=row.terminated_at,
        error=error_from_row(row),
    )


def get(
    conn: Connection, namespace: str, agent_id: str, *, for_update: bool = False
) -> AgentRecord | None:
    row = run(conn, _GET_LOCK if for_update else _GET_READ, (namespace, agent_id)).fetchone()
    return _record(_Row._make(row)) if row is not None else None


def insert_agent(conn: Connection, record: AgentRecord) -> None:
    conn.execute(
        insert(a).values(
            namespace=record.namespace,
            agent_id=record.agent_id,
            type=record.type,
            config=record.config,
            labels=dump_labels(record.labels),
            status=record.status,
            generation=record.generation,
            state_version=0,
            state_last_version=0,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )
    )
    label_rows.replace(conn, record.namespace, "agent", record.agent_id, record.labels)


LABEL_LED_MAX = 8
"""On SQLite, label filters of more labels scan agents: past about 40, its planner puts
the owners' join last and sorts the whole namespace."""


def _leading_label(
    conn: Connection,
    namespace: str,
    status: str | None,
    type: str | None,
    labels: dict[str, str],
    after_id: str | None,
) -> tuple[tuple[str, str] | None, dict[str, str]]:
    """The label whose owners should lead a page, if any, and the other labels, rarest
    first. A label leads when it is the only filter, or when it has fewer than
    labels.PROBE owners past the cursor and fewer than the agents the status or type
    filter leaves (counted as far). Otherwise agents are scanned in id order, through the
    status or type index when filtered, the labels left to PostgreSQL's planner when few.

    Neither database can tell how many agents carry a label: SQLite keeps no such
    statistics, and PostgreSQL's label checks are kept out of its join planning (see
    labels.matching). Without this, a label ten agents carry was tested on every one."""
    if not labels:
        return None, {}
    if len(labels) > LABEL_LED_MAX and conn.dialect.name == "sqlite":
        return None, labels
    ranked = label_rows.by_rarity(conn, namespace, "agent", labels, after_id)
    ordered = dict(pair for _, pair in ranked)
    owners, lead = ranked[0]
    if len(labels) > 1 and owners >= label_rows.PROBE:
        return None, ordered  # no label is known to be rare
    if status or type:
        candidates = select(a.c.agent_id).where(a.c.namespace == namespace)
        if status:
            candidates = candidates.where(a.c.status == status)
        if type:
            candidates = candidates.where(a.c.type == type)
        if after_id is not None:
            candidates = candidates.where(a.c.agent_id > after_id)
        counted = select(func.count()).select_from(candidates.limit(label_rows.PROBE).subquery())
        if len(labels) == 1:
            owners = label_rows.owners_after(conn, namespace, "agent", lead, after_id)
        if conn.execute(counted).scalar_one() <= owners:
            return None, ordered
    del ordered[lead[0]]
    return lead, ordered


def list_page(
    conn: Connection,
    namespace: str,
    *,
    status: str | None,
    type: str | None,
    labels: dict[str, str],
    after_id: str | None,
    limit: int,
    budget: int | None = None,
) -> pages.Rows[AgentRecord]:
    """Agents ordered by id, after ``after_id``; ``limit + 1`` rows tell if more follow,
    fewer when ``budget`` bytes of them do (storage/pages.py)."""
    lead, others = _leading_label(conn, namespace, status, type, labels, after_id)
    if lead is not None:
        # Led by the label's owners, which the (namespace, key, value, kind, owner_id)
        # index holds in agent_id order: a rare label reads its own agents only.
        owner = schema.labels.alias("owner")
        order = owner.c.owner_id
        query = (
            select(a)
            .select_from(
                owner.join(a, and_(a.c.namespace == owner.c.namespace, a.c.agent_id == order))
            )
            .where(
                owner.c.namespace == namespace,
                owner.c.key == lead[0],
                owner.c.value == lead[1],
                owner.c.kind == "agent",
            )
        )
    else:
        order = a.c.agent_id
        query = select(a).where(a.c.namespace == namespace)
    if status:
        query = query.where(a.c.status == status)
    if type:
        query = query.where(a.c.type == type)
    if after_id is not None:
        query = query.where(order > after_id)
    checks = label_rows.matching(namespace, "agent", a.c.agent_id, others, joinable=lead is None)
    query = query.where(*checks)
    return pages.read(conn, query.order_by(order), _AGENT_SIZE, limit + 1, budget, _record)


def set_status(
    conn: Connection,
    record: AgentRecord,
    to_status: str,
    now: int,
    *,
    stamp: str | None,
    error: ErrorRecord | None,
) -> bool:
    """Compare-and-set the status: succeeds only if the row is still at ``record``'s generation."""
    params = [to_status, record.generation + 1, *_status_params(now, stamp, error)]
    params += (record.namespace, record.agent_id, record.generation)
    cursor = run(conn, _set_status_sql(stamp, error is not None), params)
    if cursor.rowcount != 1:
        return False
    record.status = to_status
    record.generation += 1
    record.updated_at = now
    if stamp:
        setattr(record, stamp, now)
    if error is not None:
        record.error = error
    return True


def move_status(
    conn: Connection,
    namespace: str,
    agent_id: str,
    from_status: str,
    to_status: str,
    now: int,
    *,
    stamp: str | None,
    error: ErrorRecord | None,
) -> AgentRecord | None:
    """Move the agent from ``from_status`` to ``to_status`` in one statement (no read
    first) and return it as updated; None, with nothing changed, when it is missing or
    in another status."""
    params = [to_status, *_status_params(now, stamp, error), namespace, agent_id, from_status]
    found = run(conn, _move_status_sql(stamp, error is not None), params).fetchall()
    return _record(_Row._make(found[0])) if found else None  # fetchall: see add_transition


def update_fields(
    conn: Connection,
    record: AgentRecord,
    now: int,
    *,
    config: bytes | None,
    labels: dict[str, str] | None,
) -> bool:
    values: dict[str, Any] = {"generation": record.generation + 1, "updated_at": now}
    if config is not None:
        values["config"] = config
    if labels is not None:
        values["labels"] = dump_labels(labels)
    result = conn.execute(
        update(a)
        .where(
            a.c.namespace == record.namespace,
            a.c.agent_id == record.agent_id,
            a.c.generation == record.generation,
        )
        .values(**values)
    )
    if result.rowcount != 1:
        return False
    if labels is not None:
        label_rows.replace(conn, record.namespace, "agent", record.agent_id, labels)
        record.labels = labels
    if config is not None:
        record.config = config
    record.generation += 1
    record.updated_at = now
    return True


def delete_agent(conn: Connection, namespace: str, agent_id: str) -> None:
    """Remove the agent and every record that belongs only to it: its state, checkpoint
    manifests (their blobs go to garbage collection), task runs, the workflow runs it owns,
    transitions and labels. Events stay: the log is append-only."""
    lb, ck, wr = schema.labels, schema.checkpoints, schema.workflow_runs
    for kind, table, key in (("checkpoint", ck, ck.c.checkpoint_id), ("run", wr, wr.c.run_id)):
        owned = select(key).where(table.c.namespace == namespace, table.c.agent_id == agent_id)
        conn.execute(
            delete(lb).where(
                lb.c.namespace == namespace, lb.c.kind == kind, lb.c.owner_id.in_(owned)
            )
        )
    for table in (schema.states, ck, schema.task_runs, wr):
        conn.execute(
            delete(table).where(table.c.namespace == namespace, table.c.agent_id == agent_id)
        )
    conn.execute(delete(tr).where(tr.c.namespace == namespace, tr.c.agent_id == agent_id))
    label_rows.remove(conn, namespace, "agent", agent_id)
    conn.execute(delete(a).where(a.c.namespace == namespace, a.c.agent_id == agent_id))


def add_transition(conn: Connection, record: TransitionRecord) -> TransitionRecord:
    cursor = run(
        conn,
        _ADD_TRANSITION,
        (
            record.namespace,
            record.agent_id,
            record.from_status,
            record.to_status,
            record.reason,
            record.request_id,
            record.event_sequence,
            record.created_at,
        ),
    )
    (row,) = cursor.fetchall()  # to the end: SQLite finishes a RETURNING statement there
    record.id = int(row[0])
    return record


def list_transitions(
    conn: Connection, namespace: str, agent_id: str, *, after_id: int | None, limit: int
) -> list[TransitionRecord]:
    query = select(tr).where(tr.c.namespace == namespace, tr.c.agent_id == agent_id)
    if after_id is not None:
        query = query.where(tr.c.id > after_id)
    rows = conn.execute(query.order_by(tr.c.id).limit(limit + 1)).all()
    return [
        TransitionRecord(
            row.id,
            row.namespace,
            row.agent_id,
            row.from_status,
            row.to_status,
            row.reason,
            row.request_id,
            row.event_sequence,
            row.created_at,
        )
        for row in rows
    ]
