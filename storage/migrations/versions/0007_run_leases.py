"""Workflow-run leases: a run started with a heartbeat timeout is INTERRUPTED when its
driver stops sending heartbeats, so a run abandoned between task runs is found.

Three nullable columns (no default, so PostgreSQL adds them without rewriting the
table) and a partial index holding only live leases, which the sweeper walks in expiry
order. Runs written before this revision have no lease and never expire.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLE = "workflow_runs"
INDEX = "ix_workflow_runs_lease_expires_at"
COLUMNS = ("heartbeat_timeout_us", "last_heartbeat_at", "lease_expires_at")


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column(TABLE, sa.Column(column, sa.BigInteger(), nullable=True))
    live = sa.text("lease_expires_at IS NOT NULL")
    op.create_index(INDEX, TABLE, ["lease_expires_at"], sqlite_where=live, postgresql_where=live)


def downgrade() -> None:
    # Below 0007 nothing would ever end these runs when their drivers die: refuse rather
    # than drop the promise silently.
    live = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT count(*) FROM workflow_runs "
                "WHERE status = 'RUNNING' AND lease_expires_at IS NOT NULL"
            )
        )
        .scalar_one()
    )
    if live:
        raise RuntimeError(
            f"{live} running workflow runs hold a lease (a heartbeat timeout), which "
            "revision 0006 cannot enforce; end or cancel them first"
        )
    op.drop_index(INDEX, table_name=TABLE)
    with op.batch_alter_table(TABLE) as batch_op:
        for column in reversed(COLUMNS):
            batch_op.drop_column(column)
