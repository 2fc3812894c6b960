"""Leaner event indexes: every index entry is paid for by every appended event.

- Partial agent, run and task run indexes: most events have no task run (and system events
  no run), yet each one cost an entry in all three. A filter ``column = ?`` (or ``IN``)
  implies ``column IS NOT NULL``, so SQLite and PostgreSQL still use them for every query.
- No (namespace, created_at) index on SQLite: its planner serves ListEvents' time filters
  from the primary key (ORDER BY sequence) and never used it. PostgreSQL keeps it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = ("agent_id", "run_id", "task_run_id")


def _name(column: str) -> str:
    return f"ix_events_namespace_{column}_sequence"


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    if _sqlite():
        op.drop_index("ix_events_namespace_created_at", table_name="events")
    for column in COLUMNS:
        op.drop_index(_name(column), table_name="events")
        condition = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            _name(column),
            "events",
            ["namespace", column, "sequence"],
            sqlite_where=condition,
            postgresql_where=condition,
        )


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_index(_name(column), table_name="events")
        op.create_index(_name(column), "events", ["namespace", column, "sequence"])
    if _sqlite():
        op.create_index("ix_events_namespace_created_at", "events", ["namespace", "created_at"])
