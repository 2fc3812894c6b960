"""An index on labels by (namespace, key, value): label lookups no planner can get wrong.

Checkpoint listings filtered by a rare label (StatewardSaver's ``get_tuple``, for one)
read the label's owners first. With ``kind`` left out of that lookup, this index is the
only one whose leading columns match it, so PostgreSQL uses it with or without table
statistics: before, on a young table, it could scan every checkpoint label of the
namespace through the primary key for each lookup (storage/checkpoints.py, RARE_LABEL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NAME = "ix_labels_namespace_key_value_kind_owner_id"


def upgrade() -> None:
    op.create_index(
        NAME, "labels", ["namespace", "key", "value", "kind", "owner_id"], if_not_exists=True
    )


def downgrade() -> None:
    # IF EXISTS: before env.py opened a real transaction on SQLite, a downgrade that 0003
    # refused left this index dropped at revision 0004; such a database must still downgrade.
    op.drop_index(NAME, table_name="labels", if_exists=True)
