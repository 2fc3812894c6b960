"""Indexes that serve each ListWorkflowRuns filter in the listing's own order.

A listing filtered by workflow name, agent, status or retry chain sorts newest first by
(created_at, run_id). The indexes for those filters did not end in both columns (or did
not exist: root_run_id and status), so SQLite's planner walked the namespace's
(created_at, run_id) index and tested every run against the filter: a filter matching a
few old runs read every run of the namespace, documents included. Each index here is the
filter's column, then the listing's order, so a page reads its own rows and no others.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLE = "workflow_runs"
ORDER = ["created_at", "run_id"]
ADDED = ("workflow_name", "agent_id", "root_run_id", "status")
REPLACED = ("workflow_name", "agent_id")  # their (namespace, column, created_at) indexes


def _name(*columns: str) -> str:
    return f"ix_{TABLE}_namespace_{'_'.join(columns)}"


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch_op:
        for column in ADDED:
            batch_op.create_index(_name(column, *ORDER), ["namespace", column, *ORDER])
        for column in REPLACED:
            batch_op.drop_index(_name(column, "created_at"))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch_op:
        for column in REPLACED:
            batch_op.create_index(_name(column, "created_at"), ["namespace", column, "created_at"])
        for column in ADDED:
            batch_op.drop_index(_name(column, *ORDER))
