"""Initial schema: every table of the v1 contract (agents to checkpoints).

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "agents",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("config", sa.LargeBinary(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("state_version", sa.BigInteger(), nullable=False),
        sa.Column("state_last_version", sa.BigInteger(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.Integer(), nullable=True),
        sa.Column("error_retryable", sa.Boolean(), nullable=True),
        sa.Column("error_details", sa.LargeBinary(), nullable=True),
        sa.Column("error_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("initialized_at", sa.BigInteger(), nullable=True),
        sa.Column("activated_at", sa.BigInteger(), nullable=True),
        sa.Column("paused_at", sa.BigInteger(), nullable=True),
        sa.Column("terminated_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("namespace", "agent_id", name=op.f("pk_agents")),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agents_namespace_status_agent_id"),
            ["namespace", "status", "agent_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_agents_namespace_type_agent_id"),
            ["namespace", "type", "agent_id"],
            unique=False,
        )

    op.create_table(
        "checkpoints",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("state_version", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("stored_size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("compression", sa.String(length=16), nullable=False),
        sa.Column("blob_key", sa.String(length=512), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "checkpoint_id", name=op.f("pk_checkpoints")),
    )
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_checkpoints_namespace_agent_id_created_at"),
            ["namespace", "agent_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_checkpoints_namespace_agent_id_state_version"),
            ["namespace", "agent_id", "state_version"],
            unique=False,
        )

    op.create_table(
        "events",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=True),
        sa.Column("run_id", sa.String(length=128), nullable=True),
        sa.Column("task_run_id", sa.String(length=128), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("client_time", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("namespace", "sequence", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_namespace_agent_id_sequence"),
            ["namespace", "agent_id", "sequence"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_events_namespace_created_at"), ["namespace", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_events_namespace_run_id_sequence"),
            ["namespace", "run_id", "sequence"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_events_namespace_task_run_id_sequence"),
            ["namespace", "task_run_id", "sequence"],
            unique=False,
        )

    op.create_table(
        "idempotency",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "request_id", name=op.f("pk_idempotency")),
    )
    with op.batch_alter_table("idempotency", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_created_at"), ["created_at"], unique=False)

    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_leases")),
    )
    op.create_table(
        "labels",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "kind", "owner_id", "key", name=op.f("pk_labels")),
    )
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_labels_namespace_kind_key_value_owner_id"),
            ["namespace", "kind", "key", "value", "owner_id"],
            unique=False,
        )

    op.create_table(
        "namespaces",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("event_head", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", name=op.f("pk_namespaces")),
    )
    op.create_table(
        "states",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("event_sequence", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "agent_id", "version", name=op.f("pk_states")),
    )
    with op.batch_alter_table("states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_states_namespace_agent_id_created_at"),
            ["namespace", "agent_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "task_runs",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("task_run_id", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("input", sa.LargeBinary(), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.Integer(), nullable=True),
        sa.Column("error_retryable", sa.Boolean(), nullable=True),
        sa.Column("error_details", sa.LargeBinary(), nullable=True),
        sa.Column("error_at", sa.BigInteger(), nullable=True),
        sa.Column("timeout_us", sa.BigInteger(), nullable=True),
        sa.Column("heartbeat_timeout_us", sa.BigInteger(), nullable=True),
        sa.Column("progress", sa.LargeBinary(), nullable=True),
        sa.Column("compensation", sa.LargeBinary(), nullable=True),
        sa.Column("compensation_done_at", sa.BigInteger(), nullable=True),
        sa.Column("carried_from", sa.String(length=128), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("last_heartbeat_at", sa.BigInteger(), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "task_run_id", name=op.f("pk_task_runs")),
    )
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_task_runs_namespace_agent_id_seq"),
            ["namespace", "agent_id", "seq"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_task_runs_namespace_run_id_seq"),
            ["namespace", "run_id", "seq"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_task_runs_status_lease_expires_at"),
            ["status", "lease_expires_at"],
            unique=False,
        )

    op.create_table(
        "transitions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("event_sequence", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transitions")),
    )
    with op.batch_alter_table("transitions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transitions_namespace_agent_id_id"),
            ["namespace", "agent_id", "id"],
            unique=False,
        )

    op.create_table(
        "workflow_runs",
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("workflow_name", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("input", sa.LargeBinary(), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.Integer(), nullable=True),
        sa.Column("error_retryable", sa.Boolean(), nullable=True),
        sa.Column("error_details", sa.LargeBinary(), nullable=True),
        sa.Column("error_at", sa.BigInteger(), nullable=True),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("retry_of_run_id", sa.String(length=128), nullable=True),
        sa.Column("root_run_id", sa.String(length=128), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "run_id", name=op.f("pk_workflow_runs")),
    )
    with op.batch_alter_table("workflow_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workflow_runs_namespace_agent_id_created_at"),
            ["namespace", "agent_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_workflow_runs_namespace_created_at_run_id"),
            ["namespace", "created_at", "run_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_workflow_runs_namespace_root_run_id_attempt"),
            ["namespace", "root_run_id", "attempt"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_workflow_runs_namespace_status_ended_at"),
            ["namespace", "status", "ended_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_workflow_runs_namespace_workflow_name_created_at"),
            ["namespace", "workflow_name", "created_at"],
            unique=False,
        )


def downgrade() -> None:

    with op.batch_alter_table("workflow_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflow_runs_namespace_workflow_name_created_at"))
        batch_op.drop_index(batch_op.f("ix_workflow_runs_namespace_status_ended_at"))
        batch_op.drop_index(batch_op.f("ix_workflow_runs_namespace_root_run_id_attempt"))
        batch_op.drop_index(batch_op.f("ix_workflow_runs_namespace_created_at_run_id"))
        batch_op.drop_index(batch_op.f("ix_workflow_runs_namespace_agent_id_created_at"))

    op.drop_table("workflow_runs")
    with op.batch_alter_table("transitions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transitions_namespace_agent_id_id"))

    op.drop_table("transitions")
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_runs_status_lease_expires_at"))
        batch_op.drop_index(batch_op.f("ix_task_runs_namespace_run_id_seq"))
        batch_op.drop_index(batch_op.f("ix_task_runs_namespace_agent_id_seq"))

    op.drop_table("task_runs")
    with op.batch_alter_table("states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_states_namespace_agent_id_created_at"))

    op.drop_table("states")
    op.drop_table("namespaces")
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_labels_namespace_kind_key_value_owner_id"))

    op.drop_table("labels")
    op.drop_table("job_leases")
    with op.batch_alter_table("idempotency", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_created_at"))

    op.drop_table("idempotency")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_namespace_task_run_id_sequence"))
        batch_op.drop_index(batch_op.f("ix_events_namespace_run_id_sequence"))
        batch_op.drop_index(batch_op.f("ix_events_namespace_created_at"))
        batch_op.drop_index(batch_op.f("ix_events_namespace_agent_id_sequence"))

    op.drop_table("events")
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_checkpoints_namespace_agent_id_state_version"))
        batch_op.drop_index(batch_op.f("ix_checkpoints_namespace_agent_id_created_at"))

    op.drop_table("checkpoints")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agents_namespace_type_agent_id"))
        batch_op.drop_index(batch_op.f("ix_agents_namespace_status_agent_id"))

    op.drop_table("agents")
