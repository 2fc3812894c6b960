"""Table definitions for every Stateward record (SQLAlchemy Core).

One model set serves SQLite and PostgreSQL. Conventions:
- every table is keyed by ``namespace`` first, so tenants never share a key range;
- times are integer microseconds since the Unix epoch, UTC (exact, portable, cheap to
  index and compare on both databases);
- JSON documents are stored as the UTF-8 bytes the client sent (or that the server
  serialised), so they round-trip exactly, integers beyond 2^53 included.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _not_null(column: str) -> dict[str, Any]:
    """Makes an index partial: rows where ``column`` is NULL get no entry (both dialects)."""
    condition = text(f"{column} IS NOT NULL")
    return {"sqlite_where": condition, "postgresql_where": condition}


ID = String(128)
NS = String(64)
TIME = BigInteger  # microseconds since the epoch, UTC

# The per-namespace event counter. Its row lock orders event commits: see events.py.
namespaces = Table(
    "namespaces",
    metadata,
    Column("namespace", NS, primary_key=True),
    Column("event_head", BigInteger, nullable=False, default=0),
    Column("created_at", TIME, nullable=False),
)

agents = Table(
    "agents",
    metadata,
    Column("namespace", NS, primary_key=True),
    Column("agent_id", ID, primary_key=True),
    Column("type", String(128), nullable=False),
    Column("config", LargeBinary, nullable=False),
    Column("labels", Text, nullable=False),  # JSON object, mirrored in `labels`
    Column("status", String(16), nullable=False),
    Column("generation", BigInteger, nullable=False),  # bumps on every change; the etag
    Column("state_version", BigInteger, nullable=False, default=0),  # latest live version
    Column("state_last_version", BigInteger, nullable=False, default=0),  # never reused
    Column("error_message", Text),
    Column("error_kind", Integer),
    Column("error_retryable", Boolean),
    Column("error_details", LargeBinary),
    Column("error_at", TIME),
    Column("created_at", TIME, nullable=False),
    Column("updated_at", TIME, nullable=False),
    Column("initialized_at", TIME),
    Column("activated_at", TIME),
    Column("paused_at", TIME),
    Column("terminated_at", TIME),
    Index(None, "namespace", "status", "agent_id"),
    Index(None, "namespace", "type", "agent_id"),
)

# Labels of agents, runs and checkpoints, one row per pair, for indexed filtering.
labels = Table(
    "labels",
    metadata,
    Column("namespace", NS, primary_key=True),
    Column("kind", String(16), primary_key=True),  # agent | run | checkpoint
    Column("owner_id", ID, primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("value", String(256), nullable=False),
    Index(None, "namespace", "kind", "key", "value", "owner_id"),
    Index(None, "namespace", "key", "value", "kind", "owner_id"),  # revision 0004
)

transitions = Table(
    "transitions",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("namespace", NS, nullable=False),
    Column("agent_id", ID, nullable=False),
    Column("from_status", String(16)),
    Column("to_status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("event_sequence", BigInteger, nullable=False),
    Column("created_at", TIME, nullable=False),
    Index(None, "namespace", "agent_id", "id"),
)

# Answers to mutating calls, replayed when a request_id is retried.
idempotency = Table(
    "idempotency",
    metadata,
    Column("namespace", NS, primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("method", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("created_at", TIME, nullable=False),
    Index(None, "created_at"),
)

states = Table(
    "states",
    metadata,
    Column("namespace", NS, primary_key=True),
    Column("agent_id", ID, primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("document", LargeBinary, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("event_sequence", BigInteger, nullable=False),
    Column("created_at", TIME, nullable=False),
    Index(None, "namespace", "agent_id", "created_at"),
)

workflow_runs = Table(
    "workflow_runs",
    metadata,
    Column("namespace", NS, primary_key=True),
    Column("run_id", ID, primary_key=True),
    Column("workflow_name", String(128), nullable=False),
    Column("agent_id", ID),
    Column("status", String(16), nullable=False),
    Column("input", LargeBinary, nullable=False),
    Column("result", LargeBinary),
    Column("error_message", Text),
    Column("error_kind", Integer),
    Column("error_retryable", Boolean),
    Column("error_details", LargeBinary),
    Column("error_at", TIME),
    Column("labels", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("retry_of_run_id", ID),
    Column("root_run_id", ID, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", TIME, nullable=False),
    Column("started_at", TIME),
    Column("ended_at", TIME),
    Column("updated_at", TIME, nullable=False),
    # Run leases (revision 0007): NULL unless the run has a heartbeat timeout.
    Column("heartbeat_timeout_us", BigInteger),
    Column("last_heartbeat_at", TIME),
    Column("lease_expires_at", TIME),  # cleared when the run ends
    Index(None, "namespace", "created_at", "run_id"),
    # Each ListWorkflowRuns filter, then the listing's order (revision 0006).
    Index(None, "namespace", "workflow_name", "created_at", "run_id"),
    Index(None, "namespace", "agent_id", "created_at", "run_id"),
    Index(None, "namespace", "root_run_id", "created_at", "run_id"),
    Index(None, "namespace", "status", "created_at", "run_id"),
    Index(None, "namespace", "root_run_id", "attempt"),
    Index(None, "namespace", "status", "ended_at"),
    # The sweeper's: live leases only, so runs without one cost no index entry.
    Index(None, "lease_expires_at", **_not_null("lease_expires_at")),
)

task_runs = Table(
    "task_runs",
    metadata,
    Column("namespace", NS, primary_key=True),
    Column("task_run_id", ID, primary_key=True),
    Column("run_id", ID, nullable=False),
    Column("task_id", String(128), nullable=False),
    Column("agent_id", ID, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", LargeBinary, nullable=False),
    Column("result", LargeBinary),
    Column("error_message", Text),
    Column("error_kind", Integer),
    Column("error_retryable", Boolean),
    Column("error_details", LargeBinary),
    Column("error_at", TIME),
    Column("timeout_us", BigInteger),
    Column("heartbeat_timeout_us", BigInteger),
    Column("progress", LargeBinary),
    Column("compensation", LargeBinary),
    Column("compensation_done_at", TIME),
    Column("carried_from", ID),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("started_at", TIME, nullable=False),
    Column("ended_at", TIME),
    Column("last_heartbeat_at", TIME),
    Column("lease_expires_at", TIME),  # NULL when the task has no timeout at all
    Column("seq", BigInteger, nullable=False),  # creation order, for stable paging
    Index(None, "namespace", "run_id", "seq"),
    Index(None, "namespace", "agent_id", "seq"),
    Index(None, "status", "lease_expires_at"),
)

events = Table(
    "events",
    metadata,
    Column("namespace", NS, primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("type", String(128), nullable=False),
    Column("agent_id", ID),
    Column("run_id", ID),
    Column("task_run_id", ID),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", TIME, nullable=False),
    Column("client_time", TIME),
    # Events in the row (revision 0005): a packed run of one write's events ends at
    # ``sequence`` (see event_packs.py); 1 for a single event.
    Column("span", Integer, nullable=False, server_default="1"),
    # Partial (revision 0002): an event without an agent, run or task run costs no entry
    # in that index; a filter ``column = ?`` or ``IN (...)`` implies NOT NULL, so both
    # databases still pick them.
    Index(None, "namespace", "agent_id", "sequence", **_not_null("agent_id")),
    Index(None, "namespace", "run_id", "sequence", **_not_null("run_id")),
    Index(None, "namespace", "task_run_id", "sequence", **_not_null("task_run_id")),
    # Time filters (ListEvents): PostgreSQL's planner uses this for narrow windows; SQLite's
    # never picks it over the primary key (ORDER BY sequence), so there it is not kept up.
    Index(None, "namespace", "created_at").ddl_if(dialect="postgresql"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("namespace", NS, primary_key=True),
    Column("checkpoint_id", ID, primary_key=True),
    Column("agent_id", ID, nullable=False),
    Column("state_version", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("stored_size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("compression", String(16), nullable=False),
    Column("blob_key", String(512), nullable=False),  # "" when the payload is inline
    Column("labels", Text, nullable=False),
    Column("created_at", TIME, nullable=False),
    Column("payload", LargeBinary),  # a small payload stored in the row (revision 0003)
    Index(None, "namespace", "agent_id", "created_at"),
    Index(None, "namespace", "agent_id", "state_version"),
)

# Leases for background jobs (sweeper, retention) so one replica runs each at a time.
job_leases = Table(
    "job_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("expires_at", TIME, nullable=False),
)
