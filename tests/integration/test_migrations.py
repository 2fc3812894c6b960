"""Migrations build the declared schema, and those that would lose data refuse to run."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, delete, func, insert, inspect, select

from stateward.storage import migrate, runs, schema


def _downgrade(engine: Engine, revision: str) -> None:
    config = migrate._config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def _index_names(engine: Engine) -> set[str]:
    found = inspect(engine)
    return {i["name"] for table in found.get_table_names() for i in found.get_indexes(table)}


def test_downgrade_below_inline_payloads_refuses_while_any_exist(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(engine)
    row = {
        "namespace": "default",
        "checkpoint_id": "cp-1",
        "agent_id": "a",
        "state_version": 0,
        "size": 2,
        "stored_size": 2,
        "sha256": "0" * 64,
        "compression": "none",
        "blob_key": "",
        "labels": "{}",
        "created_at": 1,
        "payload": b"{}",
    }
    with engine.begin() as conn:
        conn.execute(insert(schema.checkpoints).values(row))
    indexes = _index_names(engine)
    with pytest.raises(RuntimeError, match="1 checkpoints keep their payload inline"):
        _downgrade(engine, "0002")
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert _index_names(engine) == indexes  # the steps before the refusal were undone too
    with engine.begin() as conn:
        conn.execute(delete(schema.checkpoints))
    _downgrade(engine, "0002")
    assert migrate.current_revision(engine) == "0002"
    migrate.upgrade(engine)  # and back up again
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()


def test_downgrade_below_packed_event_rows_refuses_while_any_exist(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(engine)
    row = {
        "namespace": "default",
        "sequence": 3,
        "type": "tick",
        "data": b"packed",
        "created_at": 1,
        "span": 3,
    }
    with engine.begin() as conn:
        conn.execute(insert(schema.events).values(row))
    with pytest.raises(RuntimeError, match="1 event rows hold packed runs"):
        _downgrade(engine, "0004")
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.begin() as conn:
        conn.execute(delete(schema.events))
        conn.execute(insert(schema.events).values({**row, "span": 1}))
    _downgrade(engine, "0004")  # single events are what 0004 stores
    assert migrate.current_revision(engine) == "0004"
    assert "span" not in {c["name"] for c in inspect(engine).get_columns("events")}
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()


def test_the_migrations_build_the_schema_the_code_declares(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, schema.metadata)
    if engine.dialect.name == "sqlite":
        # Declared for PostgreSQL only (``ddl_if``); revision 0002 drops it on SQLite.
        assert [(d[0], d[1].name) for d in diffs] == [
            ("add_index", "ix_events_namespace_created_at")
        ]
    else:
        assert diffs == []
    engine.dispose()


def test_run_leases_upgrade_keeps_older_runs_lease_free_and_downgrades_without_leases(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine, "0006")
    row = {
        "namespace": "default",
        "run_id": "run-old",
        "workflow_name": "wf",
        "status": "RUNNING",
        "input": b"null",
        "labels": "{}",
        "attempt": 1,
        "root_run_id": "run-old",
        "cancel_requested": False,
        "created_at": 1,
        "updated_at": 1,
    }
    with engine.begin() as conn:
        conn.execute(insert(schema.workflow_runs).values(row))
    migrate.upgrade(engine)
    assert "ix_workflow_runs_lease_expires_at" in _index_names(engine)
    with engine.connect() as conn:
        old = runs.get_run(conn, "default", "run-old")
        assert old is not None and old.status == "RUNNING"
        assert (old.heartbeat_timeout_us, old.lease_expires_at) == (None, None)
        assert runs.expired_runs(conn, before=2**62, limit=10) == []  # never expires
    leased = {**row, "run_id": "run-leased", "root_run_id": "run-leased"}
    leased |= {"heartbeat_timeout_us": 1_000_000, "lease_expires_at": 2}
    with engine.begin() as conn:
        conn.execute(insert(schema.workflow_runs).values(leased))
    with pytest.raises(RuntimeError, match="1 running workflow runs hold a lease"):
        _downgrade(engine, "0006")
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.begin() as conn:
        conn.execute(
            delete(schema.workflow_runs).where(schema.workflow_runs.c.run_id == "run-leased")
        )
    _downgrade(engine, "0006")
    columns = {c["name"] for c in inspect(engine).get_columns("workflow_runs")}
    assert not columns & {"heartbeat_timeout_us", "last_heartbeat_at", "lease_expires_at"}
    assert "ix_workflow_runs_lease_expires_at" not in _index_names(engine)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.workflow_runs)).scalar() == 1
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()
