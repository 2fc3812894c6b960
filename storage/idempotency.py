"""Stored answers of mutating calls, keyed by (namespace, request_id)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from stateward.storage import schema

t = schema.idempotency


@dataclass(slots=True)
class StoredAnswer:
    method: str
    fingerprint: str
    response: bytes


def get(conn: Connection, namespace: str, request_id: str) -> StoredAnswer | None:
    row = conn.execute(
        select(t.c.method, t.c.fingerprint, t.c.response).where(
            t.c.namespace == namespace, t.c.request_id == request_id
        )
    ).first()
    return StoredAnswer(row.method, row.fingerprint, row.response) if row else None


def put(conn: Connection, namespace: str, request_id: str, answer: StoredAnswer, now: int) -> None:
    conn.execute(
        insert(t).values(
            namespace=namespace,
            request_id=request_id,
            method=answer.method,
            fingerprint=answer.fingerprint,
            response=answer.response,
            created_at=now,
        )
    )


def expire(conn: Connection, before: int, limit: int = 10_000) -> int:
    """Forget answers older than ``before``; returns how many were removed."""
    keys = conn.execute(
        select(t.c.namespace, t.c.request_id).where(t.c.created_at < before).limit(limit)
    ).all()
    for namespace, request_id in keys:
        conn.execute(delete(t).where(t.c.namespace == namespace, t.c.request_id == request_id))
    return len(keys)
