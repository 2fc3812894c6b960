"""Label rows: one per (owner, key), so label filters use an index on any database."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import ColumnElement, Connection, and_, delete, exists, insert, select

from stateward.storage import schema

t = schema.labels


def replace(
    conn: Connection, namespace: str, kind: str, owner_id: str, labels: Mapping[str, str]
) -> None:
    conn.execute(
        delete(t).where(t.c.namespace == namespace, t.c.kind == kind, t.c.owner_id == owner_id)
    )
    if labels:
        conn.execute(
            insert(t),
            [
                {"namespace": namespace, "kind": kind, "owner_id": owner_id, "key": k, "value": v}
                for k, v in labels.items()
            ],
        )


def remove(conn: Connection, namespace: str, kind: str, owner_id: str) -> None:
    conn.execute(
        delete(t).where(t.c.namespace == namespace, t.c.kind == kind, t.c.owner_id == owner_id)
    )


def matching(
    namespace: str, kind: str, owner: ColumnElement, labels: Mapping[str, str]
) -> list[ColumnElement[bool]]:
    """WHERE clauses keeping owners that carry every label in ``labels``."""
    return [
        exists(
            select(t.c.owner_id).where(
                and_(
                    t.c.namespace == namespace,
                    t.c.kind == kind,
                    t.c.owner_id == owner,
                    t.c.key == key,
                    t.c.value == value,
                )
            )
        )
        for key, value in labels.items()
    ]
