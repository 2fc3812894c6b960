"""Label rows: one per (owner, key), so label filters use an index on any database."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import ColumnElement, Connection, and_, delete, exists, func, insert, select

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


PROBE = 1000
"""Owners counted per label, at most, to choose the label that leads a filtered listing."""


def rarest(
    conn: Connection, namespace: str, kind: str, labels: Mapping[str, str], after: str | None
) -> tuple[str, str]:
    """The label of ``labels`` with the fewest owners of ``kind`` after ``after`` (counted
    up to ``PROBE`` each; ties to the first in key order): the one whose owners should lead
    a listing, in owner order, from the (namespace, key, value, kind, owner_id) index."""
    pairs = sorted(labels.items())
    if len(pairs) == 1:
        return pairs[0]
    counts = []
    for key, value in pairs:
        owners = select(t.c.owner_id).where(
            t.c.namespace == namespace, t.c.key == key, t.c.value == value, t.c.kind == kind
        )
        if after is not None:
            owners = owners.where(t.c.owner_id > after)
        found = conn.execute(select(func.count()).select_from(owners.limit(PROBE).subquery()))
        counts.append(found.scalar_one())
    return pairs[counts.index(min(counts))]
