"""Small checkpoint payloads stored inline in their manifest row.

A checkpoint whose payload is at most ``INLINE_MAX`` bytes (server/services/
checkpoints.py) keeps it in ``checkpoints.payload`` and has no blob
(``blob_key`` is ""); larger payloads stay in blobs and leave the column NULL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    # Inline payloads have no blob for older code to read: refuse rather than lose them.
    inline = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM checkpoints WHERE payload IS NOT NULL"))
        .scalar_one()
    )
    if inline:
        raise RuntimeError(
            f"{inline} checkpoints keep their payload inline, which revision 0002 cannot "
            "read; delete them (or restore and re-create them on the newer version) first"
        )
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_column("payload")
