"""Migrations that would lose data refuse to run."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, delete, insert, inspect

from stateward.storage import migrate, schema


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
