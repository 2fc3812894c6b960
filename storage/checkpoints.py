"""Checkpoint manifests: one row per checkpoint, with its payload inline or in a blob.

A small payload is stored in the row itself (``payload``; ``blob_key`` is ""). A larger
one is a blob, and its row is inserted only after the blob was committed under its final
key (see storage/blobs.py), so every row names a complete blob; a blob without a row is
an orphan for garbage collection. "Newest" always means latest ``created_at`` (the
manifest's commit time), ties broken by ``checkpoint_id``.

The hot statements (insert, get, list) are plain SQL on the driver's cursor (see
storage/sql.py), built once per shape.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, delete, func, or_, select

from stateward.storage import labels as label_rows
from stateward.storage import schema
from stateward.storage.records import dump_labels
from stateward.storage.sql import Sql, run

c = schema.checkpoints


@dataclass(slots=True)
class CheckpointRecord:
    namespace: str
    checkpoint_id: str
    agent_id: str
    state_version: int
    size: int
    stored_size: int
    sha256: str
    compression: str
    blob_key: str  # "" for an inline payload
    created_at: int
    labels: dict[str, str] = field(default_factory=dict)
    payload: bytes | None = None  # an inline payload, when it was read

    @property
    def inline(self) -> bool:
        """The payload is in the row, not in a blob."""
        return not self.blob_key


_COLUMNS = (
    "namespace, checkpoint_id, agent_id, state_version, size, stored_size, sha256, "
    "compression, blob_key, labels, created_at"
)


def _record(row: Any) -> CheckpointRecord:
    return CheckpointRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[10],
        json.loads(row[9]),
        row[11] if len(row) > 11 else None,
    )


_GET = Sql(f"SELECT {_COLUMNS} FROM checkpoints WHERE namespace = ? AND checkpoint_id = ?")
_GET_WITH_PAYLOAD = Sql(
    f"SELECT {_COLUMNS}, payload FROM checkpoints WHERE namespace = ? AND checkpoint_id = ?"
)
_PAYLOAD = Sql("SELECT payload FROM checkpoints WHERE namespace = ? AND checkpoint_id = ?")
_INSERT = Sql(
    f"INSERT INTO checkpoints ({_COLUMNS}, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_AGENT_STATE = Sql("SELECT state_version FROM agents WHERE namespace = ? AND agent_id = ?")


def get(
    conn: Connection, namespace: str, checkpoint_id: str, *, with_payload: bool = False
) -> CheckpointRecord | None:
    """The manifest; with ``with_payload``, also an inline payload."""
    sql = _GET_WITH_PAYLOAD if with_payload else _GET
    row = run(conn, sql, (namespace, checkpoint_id)).fetchone()
    return _record(row) if row is not None else None


def payload(conn: Connection, namespace: str, checkpoint_id: str) -> bytes | None:
    """The inline payload of a checkpoint (None: no such row, or its payload is a blob)."""
    row = run(conn, _PAYLOAD, (namespace, checkpoint_id)).fetchone()
    return bytes(row[0]) if row is not None and row[0] is not None else None


def insert_pinned(conn: Connection, record: CheckpointRecord) -> bool:
    """Insert a new checkpoint (manifest and label rows) pinning the agent's live state
    version, which it sets in ``record``; False, and nothing stored, when there is no
    such agent.

    On PostgreSQL this is one statement (one round trip inside the writer's batch), and
    the agent row stays locked until commit, so a concurrent delete of the agent cannot
    leave the checkpoint behind. SQLite's writer holds the whole database anyway.
    """
    row = _manifest_row(record)
    labels: list[Any] = []
    for key, value in record.labels.items():  # a new checkpoint id: no rows to replace
        labels += (record.namespace, record.checkpoint_id, key, value)
    if conn.dialect.name == "postgresql":
        pinned = run(
            conn,
            _insert_pinned_sql(len(record.labels)),
            (record.namespace, record.agent_id, *row[:3], *row[4:], *labels),
        ).fetchone()
        if pinned is None:
            return False
        record.state_version = int(pinned[0])
        return True
    agent = run(conn, _AGENT_STATE, (record.namespace, record.agent_id)).fetchone()
    if agent is None:
        return False
    record.state_version = int(agent[0])
    run(conn, _INSERT, (*row[:3], record.state_version, *row[4:]))
    if labels:
        run(conn, _insert_labels_sql(len(record.labels)), labels)
    return True


def _manifest_row(record: CheckpointRecord) -> tuple[Any, ...]:
    """The values of ``_INSERT``, in order."""
    return (
        record.namespace,
        record.checkpoint_id,
        record.agent_id,
        record.state_version,
        record.size,
        record.stored_size,
        record.sha256,
        record.compression,
        record.blob_key,
        dump_labels(record.labels),
        record.created_at,
        record.payload,
    )


_LABEL_ROW = "(?, 'checkpoint', ?, ?, ?)"


@functools.lru_cache(maxsize=80)
def _insert_labels_sql(rows: int) -> Sql:
    values = ", ".join([_LABEL_ROW] * rows)
    return Sql(f"INSERT INTO labels (namespace, kind, owner_id, key, value) VALUES {values}")


@functools.lru_cache(maxsize=80)
def _insert_pinned_sql(labels: int) -> Sql:
    """PostgreSQL: lock the agent row, insert the manifest with its state version and the
    label rows, return that version; no row when the agent does not exist."""
    columns = [name.strip() for name in _COLUMNS.split(",")] + ["payload"]
    # A NULL payload (a blob's) would otherwise be typed text in this SELECT.
    typed = {"state_version": "state_version", "payload": "CAST(? AS BYTEA)"}
    values = ", ".join(typed.get(name, "?") for name in columns)
    tagged = ""
    if labels:
        rows = ", ".join([_LABEL_ROW] * labels)
        tagged = (
            ", tagged AS (INSERT INTO labels (namespace, kind, owner_id, key, value) "
            f"SELECT * FROM (VALUES {rows}) AS v WHERE EXISTS (SELECT 1 FROM made))"
        )
    return Sql(
        "WITH pinned AS (SELECT state_version FROM agents WHERE namespace = ? AND agent_id = ? "
        f"FOR UPDATE), made AS (INSERT INTO checkpoints ({', '.join(columns)}) "
        f"SELECT {values} FROM pinned RETURNING state_version){tagged} "
        "SELECT state_version FROM made"
    )


def delete_checkpoints(conn: Connection, namespace: str, checkpoint_ids: Iterable[str]) -> int:
    """Delete manifests (and their label rows); returns how many existed."""
    ids = list(checkpoint_ids)
    if not ids:
        return 0
    result = conn.execute(delete(c).where(c.c.namespace == namespace, c.c.checkpoint_id.in_(ids)))
    for checkpoint_id in ids:
        label_rows.remove(conn, namespace, "checkpoint", checkpoint_id)
    return int(result.rowcount or 0)


RARE_LABEL = 64
"""A label filter starts from a label with at most this many owners: their rows are read
by primary key and checked here. Otherwise the checkpoints are scanned newest first (by
agent when one is given) and the labels checked row by row; without an agent, the first
label's owners drive the scan.

PostgreSQL has no statistics on a young table (before autoanalyze) and then takes an
equality on any column as 0.5% selective: ``namespace = ? AND kind = 'checkpoint'`` looked
as rare as a full label match, every candidate was estimated at the one-row minimum, and
the choice fell to page counts. It scanned every checkpoint label of the namespace
through the labels primary key for each lookup, or every checkpoint of the agent through
an agent index. So the owners are read with a statement only one index can serve, and
the rows by primary key with no other condition (see ``_ids_sql``)."""

# Served by ix_labels_namespace_key_value_kind_owner_id (revision 0004) alone: no other
# index starts with (namespace, key, value), so ``kind`` is checked by the caller, not here.
_OWNERS = Sql(
    "SELECT owner_id, kind FROM labels WHERE namespace = ? AND key = ? AND value = ? "
    f"LIMIT {RARE_LABEL + 1}"
)


def list_page(
    conn: Connection,
    namespace: str,
    *,
    agent_id: str | None,
    before: tuple[int, str] | None,
    limit: int,
    labels: Mapping[str, str] | None = None,
    with_payloads: bool = False,
) -> list[CheckpointRecord]:
    """Newest first, after the keyset ``before``; ``limit + 1`` rows tell if more follow.
    ``with_payloads`` also reads inline payloads."""
    checks = list((labels or {}).items())
    for pair in checks:
        owners = _owners(conn, namespace, pair)
        if owners is not None:
            found = _by_ids(conn, namespace, owners, with_payloads)
            return _keep(found, agent_id, checks, before, limit + 1)
    driver = checks.pop(0) if checks and not agent_id else None
    params: list[Any] = [namespace, *driver, namespace] if driver else [namespace]
    if agent_id:
        params.append(agent_id)
    for pair in checks:
        params += pair
    if before is not None:
        params += (before[0], before[0], before[1])
    params.append(limit + 1)
    sql = _list_sql(
        driven=driver is not None,
        by_agent=bool(agent_id),
        checks=len(checks),
        keyset=before is not None,
        with_payloads=with_payloads,
    )
    return [_record(row) for row in run(conn, sql, params).fetchall()]


def _owners(conn: Connection, namespace: str, label: tuple[str, str]) -> list[str] | None:
    """The checkpoints carrying ``label``; None when it has more than RARE_LABEL owners."""
    rows = run(conn, _OWNERS, (namespace, *label)).fetchall()
    if len(rows) > RARE_LABEL:
        return None
    return [row[0] for row in rows if row[1] == "checkpoint"]


def _by_ids(
    conn: Connection, namespace: str, ids: list[str], with_payloads: bool
) -> list[CheckpointRecord]:
    """The manifests of ``ids``, each read by primary key, in no particular order. No other
    condition goes in the SQL: an agent condition would let PostgreSQL pick an agent index
    instead (see RARE_LABEL)."""
    if not ids:
        return []
    postgresql = conn.dialect.name == "postgresql"
    sql = _ids_sql(len(ids), with_payloads, postgresql)
    params = [*ids, namespace] if postgresql else [namespace, *ids]
    return [_record(row) for row in run(conn, sql, params).fetchall()]


@functools.lru_cache(maxsize=4 * RARE_LABEL)
def _ids_sql(count: int, with_payloads: bool, postgresql: bool) -> Sql:
    columns = _COLUMNS + (", payload" if with_payloads else "")
    if not postgresql:  # SQLite takes the primary key for an IN list on it
        marks = ", ".join(["?"] * count)
        return Sql(
            f"SELECT {columns} FROM checkpoints WHERE namespace = ? AND checkpoint_id IN ({marks})"
        )
    # One probe per id. Without statistics, PostgreSQL weighs the primary key (one row)
    # against a namespace-only scan of an agent index (0.5% of its size estimate) probe by
    # probe, so the key wins once the table is past a few hundred rows of LangGraph size
    # (an IN list is weighed as a whole: k rows against the same 0.5%). The OFFSET keeps
    # the probe from being flattened into a join.
    values = ", ".join(["(?)"] * count)
    return Sql(
        f"SELECT {columns} FROM (VALUES {values}) AS o (id) CROSS JOIN LATERAL "
        f"(SELECT {columns} FROM checkpoints WHERE namespace = ? AND checkpoint_id = o.id "
        "OFFSET 0) AS c"
    )


def _keep(
    found: list[CheckpointRecord],
    agent_id: str | None,
    labels: list[tuple[str, str]],
    before: tuple[int, str] | None,
    limit: int,
) -> list[CheckpointRecord]:
    """What the listing's SQL would have kept of ``found`` (the labels column mirrors the
    label rows), newest first, at most ``limit``."""
    kept = [
        r
        for r in found
        if (not agent_id or r.agent_id == agent_id)
        and all(r.labels.get(key) == value for key, value in labels)
        and (before is None or (r.created_at, r.checkpoint_id) < before)
    ]
    kept.sort(key=lambda r: (r.created_at, r.checkpoint_id), reverse=True)
    return kept[:limit]


_NO_LIMIT = 1 << 62


@functools.lru_cache(maxsize=128)
def _list_sql(
    *, driven: bool, by_agent: bool, checks: int, keyset: bool, with_payloads: bool
) -> Sql:
    columns = ", ".join(f"c.{name.strip()}" for name in _COLUMNS.split(","))
    if with_payloads:
        columns += ", c.payload"
    if driven:
        # The label's owners drive the lookup, from the (namespace, key, value) index (see
        # _OWNERS); the inner LIMIT keeps the kind check out of that scan. CROSS JOIN keeps
        # SQLite from reordering, the outer LIMIT keeps PostgreSQL from flattening the
        # subquery into a join it reorders.
        source = (
            "(SELECT owner_id FROM (SELECT owner_id, kind FROM labels WHERE namespace = ? "
            f"AND key = ? AND value = ? LIMIT {_NO_LIMIT}) AS o WHERE o.kind = 'checkpoint' "
            f"LIMIT {_NO_LIMIT}) AS l CROSS JOIN checkpoints c "
            "WHERE c.namespace = ? AND c.checkpoint_id = l.owner_id"
        )
    else:
        source = "checkpoints c WHERE c.namespace = ?"
    where = [source]
    if by_agent:
        where.append("c.agent_id = ?")
    # Each other label is one primary-key probe per row. The OFFSET keeps PostgreSQL from
    # turning the EXISTS into a join, which it may plan as a scan of every owner of the key.
    where += [
        "EXISTS (SELECT 1 FROM labels o WHERE o.namespace = c.namespace AND o.kind = 'checkpoint' "
        "AND o.owner_id = c.checkpoint_id AND o.key = ? AND o.value = ? LIMIT 1 OFFSET 0)"
    ] * checks
    if keyset:
        where.append("(c.created_at < ? OR (c.created_at = ? AND c.checkpoint_id < ?))")
    return Sql(
        f"SELECT {columns} FROM {' AND '.join(where)} "
        "ORDER BY c.created_at DESC, c.checkpoint_id DESC LIMIT ?"
    )


_NEWEST_FIRST = (c.c.created_at.desc(), c.c.checkpoint_id.desc())
_MANIFEST = [col for col in c.c if col.name != "payload"]


def newest(conn: Connection, namespace: str, agent_id: str, limit: int) -> list[CheckpointRecord]:
    """An agent's newest checkpoints, newest first (without inline payloads)."""
    rows = conn.execute(
        select(*_MANIFEST)
        .where(c.c.namespace == namespace, c.c.agent_id == agent_id)
        .order_by(*_NEWEST_FIRST)
        .limit(limit)
    ).all()
    return [_core_record(row) for row in rows]


def _core_record(row: Any) -> CheckpointRecord:
    return CheckpointRecord(
        namespace=row.namespace,
        checkpoint_id=row.checkpoint_id,
        agent_id=row.agent_id,
        state_version=row.state_version,
        size=row.size,
        stored_size=row.stored_size,
        sha256=row.sha256,
        compression=row.compression,
        blob_key=row.blob_key,
        created_at=row.created_at,
        labels=json.loads(row.labels),
    )


def prunable(
    conn: Connection,
    *,
    namespace: str | None,
    agent_id: str | None,
    keep_last: int,
    older_than: int | None,
    limit: int,
) -> list[CheckpointRecord]:
    """Checkpoints the policy lets go: beyond the ``keep_last`` newest of their agent (when
    ``keep_last`` > 0) or created before ``older_than`` (when set). The newest checkpoint of
    every agent is never among them. ``namespace`` None means every namespace."""
    query = _prunable(namespace, agent_id, keep_last, older_than)
    if query is None:
        return []
    sub = query.subquery()
    rows = conn.execute(
        select(sub)
        .order_by(sub.c.namespace, sub.c.agent_id, sub.c.created_at, sub.c.checkpoint_id)
        .limit(limit)
    ).all()
    return [_core_record(row) for row in rows]


def prunable_totals(
    conn: Connection,
    *,
    namespace: str | None,
    agent_id: str | None,
    keep_last: int,
    older_than: int | None,
) -> tuple[int, int]:
    """How many checkpoints :func:`prunable` would give without a limit, and their bytes."""
    query = _prunable(namespace, agent_id, keep_last, older_than)
    if query is None:
        return 0, 0
    sub = query.subquery()
    count, size = conn.execute(
        select(func.count(), func.coalesce(func.sum(sub.c.size), 0)).select_from(sub)
    ).one()
    return int(count), int(size)


def _prunable(
    namespace: str | None, agent_id: str | None, keep_last: int, older_than: int | None
) -> Select[Any] | None:
    if keep_last <= 0 and older_than is None:
        return None
    rank = (
        func.row_number()
        .over(partition_by=(c.c.namespace, c.c.agent_id), order_by=_NEWEST_FIRST)
        .label("rank")
    )
    ranked = select(*_MANIFEST, rank)
    if namespace is not None:
        ranked = ranked.where(c.c.namespace == namespace)
    if agent_id:
        ranked = ranked.where(c.c.agent_id == agent_id)
    sub = ranked.subquery()
    reasons = []
    if keep_last > 0:
        reasons.append(sub.c.rank > keep_last)
    if older_than is not None:
        reasons.append(sub.c.created_at < older_than)
    return select(sub).where(sub.c.rank > 1, or_(*reasons))


def manifests_for(conn: Connection, namespace: str, checkpoint_ids: list[str]) -> dict[str, str]:
    """checkpoint_id -> blob_key for the ids of ``namespace`` that have a manifest."""
    if not checkpoint_ids:
        return {}
    rows = conn.execute(
        select(c.c.checkpoint_id, c.c.blob_key).where(
            c.c.namespace == namespace, c.c.checkpoint_id.in_(checkpoint_ids)
        )
    ).all()
    return {row.checkpoint_id: row.blob_key for row in rows}
