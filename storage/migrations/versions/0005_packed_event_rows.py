"""Packed event rows: one row may hold a run of events appended by one write.

``span`` counts the events a row holds (see storage/event_packs.py); every existing row
holds one. Adding a column with a constant default rewrites nothing on either database.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("span", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    # Older code would read a packed row as one event holding the packed body: refuse
    # rather than hand out garbage.
    packed = (
        op.get_bind().execute(sa.text("SELECT count(*) FROM events WHERE span > 1")).scalar_one()
    )
    if packed:
        raise RuntimeError(
            f"{packed} event rows hold packed runs of events, which revision 0004 cannot "
            "read; archive or delete those runs first"
        )
    op.drop_column("events", "span")  # SQLite 3.35+ drops it in place
