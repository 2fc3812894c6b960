"""Checkpoint manifests: one row per checkpoint, pointing at its blob.

A manifest is inserted only after its blob was committed under its final key (see
storage/blobs.py), so every row names a complete blob; a blob without a row is an
orphan for garbage collection. "Newest" always means latest ``created_at`` (the
manifest's commit time), ties broken by ``checkpoint_id``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select

from stateward.storage import labels as label_rows
from stateward.storage import schema
from stateward.storage.records import dump_labels

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
    blob_key: str
    created_at: int
    labels: dict[str, str] = field(default_factory=dict)


def _record(row: Any) -> CheckpointRecord:
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


_NEWEST_FIRST = (c.c.created_at.desc(), c.c.checkpoint_id.desc())


def get(conn: Connection, namespace: str, checkpoint_id: str) -> CheckpointRecord | None:
    row = conn.execute(
        select(c).where(c.c.namespace == namespace, c.c.checkpoint_id == checkpoint_id)
    ).first()
    return _record(row) if row is not None else None


def insert_checkpoint(conn: Connection, record: CheckpointRecord) -> None:
    conn.execute(
        insert(c).values(
            namespace=record.namespace,
            checkpoint_id=record.checkpoint_id,
            agent_id=record.agent_id,
            state_version=record.state_version,
            size=record.size,
            stored_size=record.stored_size,
            sha256=record.sha256,
            compression=record.compression,
            blob_key=record.blob_key,
            labels=dump_labels(record.labels),
            created_at=record.created_at,
        )
    )
    if record.labels:
        label_rows.replace(
            conn, record.namespace, "checkpoint", record.checkpoint_id, record.labels
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


def list_page(
    conn: Connection,
    namespace: str,
    *,
    agent_id: str | None,
    before: tuple[int, str] | None,
    limit: int,
    labels: dict[str, str] | None = None,
) -> list[CheckpointRecord]:
    """Newest first, after the keyset ``before``; ``limit + 1`` rows tell if more follow."""
    query = select(c).where(c.c.namespace == namespace)
    if agent_id:
        query = query.where(c.c.agent_id == agent_id)
    if labels:
        query = query.where(
            *label_rows.matching(namespace, "checkpoint", c.c.checkpoint_id, labels)
        )
    if before is not None:
        created, checkpoint_id = before
        query = query.where(
            or_(
                c.c.created_at < created,
                and_(c.c.created_at == created, c.c.checkpoint_id < checkpoint_id),
            )
        )
    rows = conn.execute(query.order_by(*_NEWEST_FIRST).limit(limit + 1)).all()
    return [_record(row) for row in rows]


def newest(conn: Connection, namespace: str, agent_id: str, limit: int) -> list[CheckpointRecord]:
    """An agent's newest checkpoints, newest first."""
    rows = conn.execute(
        select(c)
        .where(c.c.namespace == namespace, c.c.agent_id == agent_id)
        .order_by(*_NEWEST_FIRST)
        .limit(limit)
    ).all()
    return [_record(row) for row in rows]


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
    if keep_last <= 0 and older_than is None:
        return []
    rank = (
        func.row_number()
        .over(partition_by=(c.c.namespace, c.c.agent_id), order_by=_NEWEST_FIRST)
        .label("rank")
    )
    ranked = select(c, rank)
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
    rows = conn.execute(
        select(sub)
        .where(sub.c.rank > 1, or_(*reasons))
        .order_by(sub.c.namespace, sub.c.agent_id, sub.c.created_at, sub.c.checkpoint_id)
        .limit(limit)
    ).all()
    return [_record(row) for row in rows]


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
