"""Alembic environment: runs migrations on the connection handed in by migrate.py."""

from __future__ import annotations

from alembic import context

from stateward.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through stateward.storage.migrate
    raise RuntimeError("run migrations through stateward.storage.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
