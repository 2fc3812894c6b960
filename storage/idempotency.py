"""Stored answers of mutating calls, keyed by (namespace, request_id).

Every retried-safe write looks its request_id up and stores its answer, so both are
plain SQL on the driver's cursor (``storage/sql.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, select

from stateward.storage import schema
from stateward.storage.sql import Sql, run

t = schema.idempotency
_GET = Sql(
    "SELECT method, fingerprint, response FROM idempotency WHERE namespace = ? AND request_id = ?"
)
_PUT = Sql(
    "INSERT INTO idempotency (namespace, request_id, method, fingerprint, response, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclass(slots=True)
class StoredAnswer:
    method: str
    fingerprint: str
    response: bytes


def get(conn: Connection, namespace: str, request_id: str) -> StoredAnswer | None:
    row = run(conn, _GET, (namespace, request_id)).fetchone()
    return StoredAnswer(*row) if row is not None else None


def put(conn: Connection, namespace: str, request_id: str, answer: StoredAnswer, now: int) -> None:
    run(
        conn,
        _PUT,
        (namespace, request_id, answer.method, answer.fingerprint, answer.response, now),
    )


def expire(conn: Connection, before: int, limit: int = 10_000) -> int:
    """Forget answers older than ``before``; returns how many were removed."""
    keys = conn.execute(
        select(t.c.namespace, t.c.request_id).where(t.c.created_at < before).limit(limit)
    ).all()
    for namespace, request_id in keys:
        conn.execute(delete(t).where(t.c.namespace == namespace, t.c.request_id == request_id))
    return len(keys)
