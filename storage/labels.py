"""Label rows: one per (owner, key), so label filters use an index on any database."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import ColumnElement, Connection, delete, exists, func, insert, select

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
    """WHERE clauses keeping owners that carry every label in ``labels``: one primary-key
    probe per row each.

    ``LIMIT 1 OFFSET 0`` keeps PostgreSQL from pulling an EXISTS up into a semi-join: its
    planner weighs every order of those joins (13 s to plan 64 labels, on every request)
    and, misjudging how labels correlate, ran 16 of them as nested scans for 1.3 s a page.
    What to start from is chosen beforehand (``rarest``); SQLite plans them so anyway."""
    return [
        exists(
            select(t.c.owner_id)
            .where(
                t.c.namespace == namespace,
                t.c.kind == kind,
                t.c.owner_id == owner,
                t.c.key == key,
                t.c.value == value,
            )
            .limit(1)
            .offset(0)
        )
        for key, value in labels.items()
    ]


PROBE = 1000
"""Candidates counted per filter, at most, to choose what leads a filtered listing."""


def owners_after(
    conn: Connection, namespace: str, kind: str, label: tuple[str, str], after: str | None
) -> int:
    """How many owners of ``kind`` past ``after`` carry ``label``, counted up to PROBE."""
    key, value = label
    owners = select(t.c.owner_id).where(
        t.c.namespace == namespace, t.c.key == key, t.c.value == value, t.c.kind == kind
    )
    if after is not None:
        owners = owners.where(t.c.owner_id > after)
    counted = conn.execute(select(func.count()).select_from(owners.limit(PROBE).subquery()))
    return int(counted.scalar_one())


def rarest(
    conn: Connection, namespace: str, kind: str, labels: Mapping[str, str], after: str | None
) -> tuple[tuple[str, str], int]:
    """The label of ``labels`` with the fewest owners of ``kind`` past ``after``, and that
    count (each counted up to PROBE; ties go to the first in key order)."""
    counted = [
        (owners_after(conn, namespace, kind, pair, after), pair) for pair in sorted(labels.items())
    ]
    count, pair = min(counted, key=lambda each: each[0])
    return pair, count
