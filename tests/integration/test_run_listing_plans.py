"""Each ListWorkflowRuns filter reads through an index in the listing's own order, so a
filter that matches a few old runs reads those runs, not the namespace's (revision 0006).

SQLite's planner is checked directly: without statistics it prefers an index that gives
the ORDER BY over one that narrows the rows, and before 0006 no filter's index gave both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event

from stateward.storage import migrate
from stateward.storage import runs as run_rows

FILTERS: dict[str, dict[str, Any]] = {
    "workflow_name": {"workflow_name": "nightly"},
    "agent_id": {"agent_id": "agent-7"},
    "root_run_id": {"root_run_id": "run_01"},
    "status": {"status": "RUNNING"},
}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = create_engine(f"sqlite:///{tmp_path / 'plans.sqlite'}")
    migrate.upgrade(made)
    yield made
    made.dispose()


def listing_statement(engine: Engine, before: tuple[int, str] | None, **filters: Any) -> Any:
    """The statement and parameters ``list_runs`` runs with ``filters``."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    arguments: dict[str, Any] = {
        "workflow_name": None,
        "status": None,
        "labels": {},
        "agent_id": None,
        "created_from": None,
        "created_to": None,
        "root_run_id": None,
        **filters,
    }
    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            run_rows.list_runs(conn, "default", before=before, limit=50, **arguments)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen[-1]


def explain(engine: Engine, statement: str, parameters: Any) -> str:
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        rows = cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
    return "\n".join(str(row[-1]) for row in rows)


def plan_of_listing(engine: Engine, before: tuple[int, str] | None, **filters: Any) -> str:
    """SQLite's query plan for the statement ``list_runs`` runs with ``filters``."""
    return explain(engine, *listing_statement(engine, before, **filters))


@pytest.mark.parametrize("column", sorted(FILTERS))
@pytest.mark.parametrize("before", [None, (1_700_000_000_000_000, "run_x")], ids=["first", "next"])
def test_each_filter_seeks_its_rows_in_the_listings_order(
    engine: Engine, column: str, before: tuple[int, str] | None
) -> None:
    plan = plan_of_listing(engine, before, **FILTERS[column])
    assert f"USING INDEX ix_workflow_runs_namespace_{column}_created_at_run_id" in plan, plan
    assert f"namespace=? AND {column}=?" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # no sort: the index gives the order


def test_before_the_revision_a_filter_walked_the_whole_namespace(engine: Engine) -> None:
    from alembic import command

    statement, parameters = listing_statement(engine, None, workflow_name="nightly")
    config = migrate._config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0005")
    # The same statement on the schema before 0006, which lacks later revisions' columns:
    # all the row's columns are read either way, so the plan is the one it had.
    head, rest = statement.split("\nFROM workflow_runs", 1)
    assert head.startswith("SELECT workflow_runs.namespace, ")
    plan = explain(engine, f"SELECT workflow_runs.* FROM workflow_runs{rest}", parameters)
    # Every run of the namespace, newest first, each tested against the filter.
    assert "ix_workflow_runs_namespace_created_at_run_id (namespace=?)" in plan, plan
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    plan = plan_of_listing(engine, None, workflow_name="nightly")
    assert "namespace=? AND workflow_name=?" in plan, plan
