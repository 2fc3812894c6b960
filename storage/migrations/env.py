"""Alembic environment: runs migrations on the connection handed in by migrate.py."""

from __future__ import annotations

from alembic import context

from stateward.storage.schema import metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through stateward.storage.migrate")
    if (
        connection.dialect.name == "sqlite"
        and not connection.connection.dbapi_connection.in_transaction
    ):
        # pysqlite runs DDL outside any transaction unless one is open, so a migration
        # that refuses midway (0003's downgrade) would leave the steps before it done
        # while the revision rolls back. SQLite's DDL is transactional once this is open.
        connection.exec_driver_sql("BEGIN")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


# Alembic executes this module with a configured context; a plain import (for
# instance by a packaging test that imports every module) must not run anything.
if getattr(context, "config", None) is not None:
    run_migrations()
