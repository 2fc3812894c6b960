"""Versioned state documents: one row per (namespace, agent, version).

The agent row carries the two counters: ``state_version`` (the live version, 0 when
there is none) and ``state_last_version`` (the highest version ever written, so
numbers are never reused, not even after a clear). A version referenced by a row in
``checkpoints`` is never deleted here.

Statements are built once, with bind parameters: building a Core statement costs
several times more than executing it on SQLite, and these run on every state call.
The statements of every write and of the per-call probes are plain SQL run on the
driver's cursor (``storage/sql.py``), which costs a tenth of a prebuilt Core statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import (
    BindParameter,
    Connection,
    bindparam,
    func,
    select,
)

from stateward.storage import pages, schema
from stateward.storage.sql import Sql, run

s = schema.states
a = schema.agents


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
_DOCUMENT_SIZE = pages.Sizes(s.c.document)

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

_HEAD_COLUMNS = "namespace, agent_id, type, status, created_at, state_version, state_last_version"
_HEAD_READ = Sql(f"SELECT {_HEAD_COLUMNS} FROM agents WHERE namespace = ? AND agent_id = ?")
_HEAD_LOCK = Sql(_HEAD_READ.sqlite, for_update=True)
_PROBE = Sql(
    "SELECT state_version, created_at, status FROM agents WHERE namespace = ? AND agent_id = ?"
)
_LATEST = select(*_HEAD, *_ALL).select_from(_LIVE).where(*_THIS_AGENT)
_LATEST_MANY = (
    select(*_HEAD, *_ALL)
    .select_from(_LIVE)
    .where(a.c.namespace == _NS, a.c.agent_id.in_(bindparam("agents", expanding=True)))
    .where(s.c.version.is_not(None))
)
_RECORD_COLUMNS = (
    "namespace, agent_id, version, document, schema_version, size, event_sequence, created_at"
)
_VERSION = Sql(
    f"SELECT {_RECORD_COLUMNS} FROM states WHERE namespace = ? AND agent_id = ? AND version = ?"
)
_AS_OF = (
    select(*_ALL)
    .where(*_THIS_STATE, s.c.created_at <= bindparam("at"))
    .order_by(s.c.version.desc())
    .limit(1)
)
_INSERT = Sql(f"INSERT INTO states ({_RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_SET_VERSIONS = Sql(
    "UPDATE agents SET state_version = ?, state_last_version = ? "
    "WHERE namespace = ? AND agent_id = ?"
)
# Takes the next version number and makes it live, in one statement; no row when the
# agent is missing, TERMINATED, or (the second form) not at the expected version.
_NEXT_VERSION = (
    "UPDATE agents SET state_version = state_last_version + 1, "
    "state_last_version = state_last_version + 1 "
    "WHERE namespace = ? AND agent_id = ? AND status <> 'TERMINATED'"
)
_NEXT = Sql(f"{_NEXT_VERSION} RETURNING type, created_at, state_last_version")
_NEXT_IF_AT = Sql(
    f"{_NEXT_VERSION} AND state_version = ? RETURNING type, created_at, state_last_version"
)
_UNPINNED = (
    "NOT EXISTS (SELECT 1 FROM checkpoints WHERE checkpoints.namespace = states.namespace "
    "AND checkpoints.agent_id = states.agent_id AND checkpoints.state_version = states.version)"
)
_DELETE_STATES = "DELETE FROM states WHERE namespace = ? AND agent_id = ?"
_PRUNE_ONE = Sql(f"{_DELETE_STATES} AND version = ? AND {_UNPINNED}")
_PRUNE_UPTO = Sql(f"{_DELETE_STATES} AND version <= ? AND {_UNPINNED}")
_DELETE_UNPINNED = Sql(f"{_DELETE_STATES} AND {_UNPINNED}")


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
    row = run(conn, _HEAD_LOCK if for_update else _HEAD_READ, (namespace, agent_id)).fetchone()
    return StateHead(*row) if row is not None else None


class Probe(NamedTuple):
    state_version: int
    created_at: int
    status: str


def probe(conn: Connection, namespace: str, agent_id: str) -> Probe | None:
    """The agent's live state version, created_at and status (None: no such agent).

    The cheapest read that says whether a cached latest state is still current.
    """
    row = run(conn, _PROBE, (namespace, agent_id)).fetchone()
    return Probe(*row) if row is not None else None


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
    row = run(conn, _VERSION, (namespace, agent_id, version)).fetchone()
    return StateRecord(*row) if row is not None else None


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
    budget: int | None = None,
) -> pages.Rows[StateRecord]:
    """Versions newest first, below ``before``; ``limit + 1`` rows tell if more follow,
    fewer when ``budget`` bytes of their documents do (storage/pages.py)."""
    query = select(*(_ALL if with_documents else _META)).where(
        s.c.namespace == namespace, s.c.agent_id == agent_id
    )
    if before is not None:
        query = query.where(s.c.version < before)
    return pages.read(
        conn,
        query.order_by(s.c.version.desc()),
        _DOCUMENT_SIZE,
        limit + 1,
        budget if with_documents else None,
        lambda row: _record(row, with_documents),
    )


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
class NextVersion(NamedTuple):
    """The agent columns a new version needs, read back as its number was taken."""

    type: str
    created_at: int
    version: int


def take_next_version(
    conn: Connection, namespace: str, agent_id: str, *, expected: int | None
) -> NextVersion | None:
    """Make the agent's next version number its live one and return it, in one statement.

    None, with nothing changed, when the agent is missing or TERMINATED or, with
    ``expected``, its live version is another: read :func:`head` to say which.
    """
    if expected is None:
        cursor = run(conn, _NEXT, (namespace, agent_id))
    else:
        cursor = run(conn, _NEXT_IF_AT, (namespace, agent_id, expected))
    found = cursor.fetchall()  # to the end: SQLite finishes a RETURNING statement there
    return NextVersion(*found[0]) if found else None


def insert_version(conn: Connection, record: StateRecord) -> None:
    run(
        conn,
        _INSERT,
        (
            record.namespace,
            record.agent_id,
            record.version,
            record.document,
            record.schema_version,
            record.size,
            record.event_sequence,
            record.created_at,
        ),
    )


def set_versions(conn: Connection, namespace: str, agent_id: str, *, live: int, last: int) -> None:
    run(conn, _SET_VERSIONS, (live, last, namespace, agent_id))


def prune(conn: Connection, namespace: str, agent_id: str, cutoff: int, *, sweep: bool) -> int:
    """Delete version ``cutoff`` (or, with ``sweep``, every version up to it) unless pinned.

    A write calls this with ``cutoff = new_version - history``: the point delete keeps
    the write O(1); the occasional sweep catches versions a checkpoint no longer pins
    and those left over after the history setting was lowered.
    """
    if cutoff < 1:
        return 0
    cursor = run(conn, _PRUNE_UPTO if sweep else _PRUNE_ONE, (namespace, agent_id, cutoff))
    return max(0, cursor.rowcount)


def delete_unpinned(conn: Connection, namespace: str, agent_id: str) -> int:
    """Delete every version of an agent that no checkpoint references."""
    return max(0, run(conn, _DELETE_UNPINNED, (namespace, agent_id)).rowcount)
