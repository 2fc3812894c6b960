"""Versioned state documents: one row per (namespace, agent, version).

The agent row carries the two counters: ``state_version`` (the live version, 0 when
there is none) and ``state_last_version`` (the highest version ever written, so
numbers are never reused, not even after a clear). A version referenced by a row in
``checkpoints`` is never deleted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, exists, func, insert, select, update

from stateward.storage import schema

s = schema.states
a = schema.agents
c = schema.checkpoints


@dataclass(slots=True)
class StateRecord:
    """One stored version; ``document`` is empty when it was not loaded."""

    namespace: str
    agent_id: str
    version: int
    document: bytes
    schema_version: int
    size: int
    event_sequence: int
    created_at: int


@dataclass(slots=True)
class StateHead:
    """The agent columns that state reads and writes need."""

    agent_id: str
    type: str
    status: str
    created_at: int  # tells two agents apart that reused one id after a delete
    state_version: int
    state_last_version: int


_HEAD = (
    a.c.agent_id,
    a.c.type,
    a.c.status,
    a.c.created_at,
    a.c.state_version,
    a.c.state_last_version,
)
_META = (
    s.c.namespace,
    s.c.agent_id,
    s.c.version,
    s.c.schema_version,
    s.c.size,
    s.c.event_sequence,
    s.c.created_at,
)
_ALL = (*_META, s.c.document)


def _head(row: Any) -> StateHead:
    return StateHead(
        row.agent_id,
        row.type,
        row.status,
        row.created_at,
        row.state_version,
        row.state_last_version,
    )


def _record(row: Any, with_document: bool = True) -> StateRecord:
    return StateRecord(
        row.namespace,
        row.agent_id,
        row.version,
        row.document if with_document else b"",
        row.schema_version,
        row.size,
        row.event_sequence,
        row.created_at,
    )


def _pinned() -> Any:
    """True for a states row that some checkpoint references (correlated subquery)."""
    return exists().where(
        c.c.namespace == s.c.namespace,
        c.c.agent_id == s.c.agent_id,
        c.c.state_version == s.c.version,
    )


# -- reads ---------------------------------------------------------------------------
def head(
    conn: Connection, namespace: str, agent_id: str, *, for_update: bool = False
) -> StateHead | None:
    query = select(*_HEAD).where(a.c.namespace == namespace, a.c.agent_id == agent_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return _head(row) if row is not None else None


def probe(conn: Connection, namespace: str, agent_id: str) -> tuple[int, int] | None:
    """(live state version, agent created_at), or None when the agent does not exist.

    The cheapest read that says whether a cached latest state is still current.
    """
    row = conn.execute(
        select(a.c.state_version, a.c.created_at).where(
            a.c.namespace == namespace, a.c.agent_id == agent_id
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


def latest(
    conn: Connection, namespace: str, agent_id: str
) -> tuple[StateHead | None, StateRecord | None]:
    """The agent and its live state in one query (either may be None)."""
    row = conn.execute(
        select(*_HEAD, *_ALL)
        .select_from(
            a.outerjoin(
                s,
                (s.c.namespace == a.c.namespace)
                & (s.c.agent_id == a.c.agent_id)
                & (s.c.version == a.c.state_version),
            )
        )
        .where(a.c.namespace == namespace, a.c.agent_id == agent_id)
    ).first()
    if row is None:
        return None, None
    return _head(row), (_record(row) if row.version is not None else None)


def latest_many(
    conn: Connection, namespace: str, agent_ids: Sequence[str]
) -> list[tuple[StateHead, StateRecord]]:
    """The live states of those agents that have one, in one query (any order)."""
    rows = conn.execute(
        select(*_HEAD, *_ALL)
        .select_from(
            a.join(
                s,
                (s.c.namespace == a.c.namespace)
                & (s.c.agent_id == a.c.agent_id)
                & (s.c.version == a.c.state_version),
            )
        )
        .where(a.c.namespace == namespace, a.c.agent_id.in_(list(agent_ids)))
    ).all()
    return [(_head(row), _record(row)) for row in rows]


def get_version(
    conn: Connection, namespace: str, agent_id: str, version: int
) -> StateRecord | None:
    row = conn.execute(
        select(*_ALL).where(
            s.c.namespace == namespace, s.c.agent_id == agent_id, s.c.version == version
        )
    ).first()
    return _record(row) if row is not None else None


def as_of(conn: Connection, namespace: str, agent_id: str, at: int) -> StateRecord | None:
    """The newest retained version committed at or before ``at`` (microseconds)."""
    row = conn.execute(
        select(*_ALL)
        .where(s.c.namespace == namespace, s.c.agent_id == agent_id, s.c.created_at <= at)
        .order_by(s.c.version.desc())
        .limit(1)
    ).first()
    return _record(row) if row is not None else None


def list_versions(
    conn: Connection,
    namespace: str,
    agent_id: str,
    *,
    before: int | None,
    limit: int,
    with_documents: bool,
) -> list[StateRecord]:
    """Versions newest first, below ``before``; ``limit + 1`` rows tell if more follow."""
    query = select(*(_ALL if with_documents else _META)).where(
        s.c.namespace == namespace, s.c.agent_id == agent_id
    )
    if before is not None:
        query = query.where(s.c.version < before)
    rows = conn.execute(query.order_by(s.c.version.desc()).limit(limit + 1)).all()
    return [_record(row, with_documents) for row in rows]


def migration_page(
    conn: Connection, namespace: str, agent_type: str, *, after_id: str | None, limit: int
) -> list[tuple[str, int | None]]:
    """(agent_id, live schema_version or None) for agents of a type, by id; ``limit + 1`` rows."""
    query = (
        select(a.c.agent_id, s.c.schema_version)
        .select_from(
            a.outerjoin(
                s,
                (s.c.namespace == a.c.namespace)
                & (s.c.agent_id == a.c.agent_id)
                & (s.c.version == a.c.state_version),
            )
        )
        .where(a.c.namespace == namespace, a.c.type == agent_type)
    )
    if after_id is not None:
        query = query.where(a.c.agent_id > after_id)
    rows = conn.execute(query.order_by(a.c.agent_id).limit(limit + 1)).all()
    return [(row[0], row[1]) for row in rows]


def count_agents_after(
    conn: Connection, namespace: str, agent_type: str, after_id: str | None
) -> int:
    query = (
        select(func.count())
        .select_from(a)
        .where(a.c.namespace == namespace, a.c.type == agent_type)
    )
    if after_id is not None:
        query = query.where(a.c.agent_id > after_id)
    return int(conn.execute(query).scalar_one())


# -- writes --------------------------------------------------------------------------
def insert_version(conn: Connection, record: StateRecord) -> None:
    conn.execute(
        insert(s).values(
            namespace=record.namespace,
            agent_id=record.agent_id,
            version=record.version,
            document=record.document,
            schema_version=record.schema_version,
            size=record.size,
            event_sequence=record.event_sequence,
            created_at=record.created_at,
        )
    )


def set_versions(conn: Connection, namespace: str, agent_id: str, *, live: int, last: int) -> None:
    conn.execute(
        update(a)
        .where(a.c.namespace == namespace, a.c.agent_id == agent_id)
        .values(state_version=live, state_last_version=last)
    )


def prune(conn: Connection, namespace: str, agent_id: str, cutoff: int, *, sweep: bool) -> int:
    """Delete version ``cutoff`` (or, with ``sweep``, every version up to it) unless pinned.

    A write calls this with ``cutoff = new_version - history``: the point delete keeps
    the write O(1); the occasional sweep catches versions a checkpoint no longer pins
    and those left over after the history setting was lowered.
    """
    if cutoff < 1:
        return 0
    window = s.c.version <= cutoff if sweep else s.c.version == cutoff
    result = conn.execute(
        delete(s).where(s.c.namespace == namespace, s.c.agent_id == agent_id, window, ~_pinned())
    )
    return int(result.rowcount or 0)


def delete_unpinned(conn: Connection, namespace: str, agent_id: str) -> int:
    """Delete every version of an agent that no checkpoint references."""
    result = conn.execute(
        delete(s).where(s.c.namespace == namespace, s.c.agent_id == agent_id, ~_pinned())
    )
    return int(result.rowcount or 0)
