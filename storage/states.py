"""Versioned state documents: one row per (namespace, agent, version).

The agent row carries the two counters: ``state_version`` (the live version, 0 when
there is none) and ``state_last_version`` (the highest version ever written, so
numbers are never reused, not even after a clear). A version referenced by a row in
``checkpoints`` is never deleted here.

Statements are built once, with bind parameters: building a Core statement costs
several times more than executing it on SQLite, and these run on every state call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import (
    BindParameter,
    Connection,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)

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

    namespace: str
    agent_id: str
    type: str
    status: str
    created_at: int  # tells two agents apart that reused one id after a delete
    state_version: int
    state_last_version: int


_HEAD = (
    a.c.namespace,
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

# Bind parameters shared by the statements below.
_NS: BindParameter[str] = bindparam("ns")
_AGENT: BindParameter[str] = bindparam("agent")
_THIS_AGENT = (a.c.namespace == _NS, a.c.agent_id == _AGENT)
_THIS_STATE = (s.c.namespace == _NS, s.c.agent_id == _AGENT)
_LIVE = a.outerjoin(
    s,
    (s.c.namespace == a.c.namespace)
    & (s.c.agent_id == a.c.agent_id)
    & (s.c.version == a.c.state_version),
)
# True for a states row that some checkpoint references (a correlated subquery).
_PINNED = exists().where(
    c.c.namespace == s.c.namespace,
    c.c.agent_id == s.c.agent_id,
    c.c.state_version == s.c.version,
)

_HEAD_READ = select(*_HEAD).where(*_THIS_AGENT)
_HEAD_LOCK = _HEAD_READ.with_for_update()
_PROBE = select(a.c.state_version, a.c.created_at, a.c.status).where(*_THIS_AGENT)
_LATEST = select(*_HEAD, *_ALL).select_from(_LIVE).where(*_THIS_AGENT)
_LATEST_MANY = (
    select(*_HEAD, *_ALL)
    .select_from(_LIVE)
    .where(a.c.namespace == _NS, a.c.agent_id.in_(bindparam("agents", expanding=True)))
    .where(s.c.version.is_not(None))
)
_VERSION = select(*_ALL).where(*_THIS_STATE, s.c.version == bindparam("version"))
_AS_OF = (
    select(*_ALL)
    .where(*_THIS_STATE, s.c.created_at <= bindparam("at"))
    .order_by(s.c.version.desc())
    .limit(1)
)
_INSERT = insert(s)
_SET_VERSIONS = (
    update(a)
    .where(*_THIS_AGENT)
    .values(state_version=bindparam("live"), state_last_version=bindparam("last"))
)
_PRUNE_ONE = delete(s).where(*_THIS_STATE, s.c.version == bindparam("cutoff"), ~_PINNED)
_PRUNE_UPTO = delete(s).where(*_THIS_STATE, s.c.version <= bindparam("cutoff"), ~_PINNED)
_DELETE_UNPINNED = delete(s).where(*_THIS_STATE, ~_PINNED)


def _head(row: Any) -> StateHead:
    return StateHead(
        row.namespace,
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


# -- reads ---------------------------------------------------------------------------
def head(
    conn: Connection, namespace: str, agent_id: str, *, for_update: bool = False
) -> StateHead | None:
    query = _HEAD_LOCK if for_update else _HEAD_READ
    row = conn.execute(query, {"ns": namespace, "agent": agent_id}).first()
    return _head(row) if row is not None else None


class Probe(NamedTuple):
    state_version: int
    created_at: int
    status: str


def probe(conn: Connection, namespace: str, agent_id: str) -> Probe | None:
    """The agent's live state version, created_at and status (None: no such agent).

    The cheapest read that says whether a cached latest state is still current.
    """
    row = conn.execute(_PROBE, {"ns": namespace, "agent": agent_id}).first()
    return Probe(row[0], row[1], row[2]) if row is not None else None


def latest(
    conn: Connection, namespace: str, agent_id: str
) -> tuple[StateHead | None, StateRecord | None]:
    """The agent and its live state in one query (either may be None)."""
    row = conn.execute(_LATEST, {"ns": namespace, "agent": agent_id}).first()
    if row is None:
        return None, None
    return _head(row), (_record(row) if row.version is not None else None)


def latest_many(
    conn: Connection, namespace: str, agent_ids: Sequence[str]
) -> list[tuple[StateHead, StateRecord]]:
    """The live states of those agents that have one, in one query (any order)."""
    rows = conn.execute(_LATEST_MANY, {"ns": namespace, "agents": list(agent_ids)}).all()
    return [(_head(row), _record(row)) for row in rows]


def get_version(
    conn: Connection, namespace: str, agent_id: str, version: int
) -> StateRecord | None:
    row = conn.execute(_VERSION, {"ns": namespace, "agent": agent_id, "version": version}).first()
    return _record(row) if row is not None else None


def as_of(conn: Connection, namespace: str, agent_id: str, at: int) -> StateRecord | None:
    """The newest retained version committed at or before ``at`` (microseconds)."""
    row = conn.execute(_AS_OF, {"ns": namespace, "agent": agent_id, "at": at}).first()
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
        .select_from(_LIVE)
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
        _INSERT,
        {
            "namespace": record.namespace,
            "agent_id": record.agent_id,
            "version": record.version,
            "document": record.document,
            "schema_version": record.schema_version,
            "size": record.size,
            "event_sequence": record.event_sequence,
            "created_at": record.created_at,
        },
    )


def set_versions(conn: Connection, namespace: str, agent_id: str, *, live: int, last: int) -> None:
    conn.execute(_SET_VERSIONS, {"ns": namespace, "agent": agent_id, "live": live, "last": last})


def prune(conn: Connection, namespace: str, agent_id: str, cutoff: int, *, sweep: bool) -> int:
    """Delete version ``cutoff`` (or, with ``sweep``, every version up to it) unless pinned.

    A write calls this with ``cutoff = new_version - history``: the point delete keeps
    the write O(1); the occasional sweep catches versions a checkpoint no longer pins
    and those left over after the history setting was lowered.
    """
    if cutoff < 1:
        return 0
    query = _PRUNE_UPTO if sweep else _PRUNE_ONE
    result = conn.execute(query, {"ns": namespace, "agent": agent_id, "cutoff": cutoff})
    return int(result.rowcount or 0)


def delete_unpinned(conn: Connection, namespace: str, agent_id: str) -> int:
    """Delete every version of an agent that no checkpoint references."""
    result = conn.execute(_DELETE_UNPINNED, {"ns": namespace, "agent": agent_id})
    return int(result.rowcount or 0)
