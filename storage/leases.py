"""Leases on named background jobs, so one replica at a time runs each (job_leases table).

``try_acquire`` is one conditional upsert: it takes the row when it is free, expired or
already ours, and leaves it alone otherwise. Whoever holds the lease when its time runs
out loses it to the next replica that asks; a crashed holder blocks no one for longer
than one lease.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from stateward.storage import schema

j = schema.job_leases


def try_acquire(
    conn: Connection, dialect: str, name: str, owner: str, now: int, until: int
) -> bool:
    """Take or renew the lease ``name`` for ``owner`` until ``until``; True if we hold it."""
    ins = postgresql.insert(j) if dialect == "postgresql" else sqlite.insert(j)
    statement = ins.values(name=name, owner=owner, expires_at=until).on_conflict_do_update(
        index_elements=[j.c.name],
        set_={"owner": owner, "expires_at": until},
        where=(j.c.expires_at < now) | (j.c.owner == owner),
    )
    conn.execute(statement)
    holder = conn.execute(select(j.c.owner).where(j.c.name == name)).scalar()
    return holder == owner


def release(conn: Connection, name: str, owner: str) -> None:
    """Give the lease up early (on shutdown), if we still hold it."""
    conn.execute(delete(j).where(j.c.name == name, j.c.owner == owner))
