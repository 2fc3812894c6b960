"""Agents filtered by labels are read from the rarest label's owners, in agent_id order
(storage/agents.py, labels.rarest): a filter matching a few agents reads those agents,
not the namespace's, and paging through it loses and repeats nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert

from stateward.storage import Database, WriteContext, migrate, schema
from stateward.storage import agents as agent_rows
from stateward.storage import labels as label_rows

AGENTS = 3000
RARE = {n for n in range(AGENTS) if n % 500 == 7}  # six agents


def labels_of(n: int) -> dict[str, str]:
    found = {"env": "prod", "team": "rare" if n in RARE else "common"}
    if n % 2:
        found["tier"] = "odd"
    return found


def seed(ctx: WriteContext) -> None:
    """AGENTS agents and their label rows, in two bulk inserts."""
    ctx.conn.execute(
        insert(schema.agents),
        [
            {
                "namespace": "ns",
                "agent_id": f"a{n:05d}",
                "type": "t",
                "config": b"{}",
                "labels": json.dumps(labels_of(n)),
                "status": "CREATED",
                "generation": 1,
                "state_version": 0,
                "state_last_version": 0,
                "created_at": 1,
                "updated_at": 1,
            }
            for n in range(AGENTS)
        ],
    )
    ctx.conn.execute(
        insert(schema.labels),
        [
            {"namespace": "ns", "kind": "agent", "owner_id": f"a{n:05d}", "key": k, "value": v}
            for n in range(AGENTS)
            for k, v in labels_of(n).items()
        ],
    )


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate.upgrade(database.write_engine)
    database.start()

    database.write_sync(seed)
    if database.dialect == "postgresql":
        # A table this size has statistics in use (autoanalyze follows the first 10% of
        # rows written); without them PostgreSQL plans every join as if it had one row.
        with database.write_engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    yield database
    database.close()


def page_of(db: Database, labels: dict[str, str], after: str | None, size: int) -> list[str]:
    page = db.read_sync(
        lambda conn: agent_rows.list_page(
            conn, "ns", status=None, type=None, labels=labels, after_id=after, limit=size
        )
    )
    return [r.agent_id for r in page]


def listed(db: Database, labels: dict[str, str], page_size: int) -> list[str]:
    found: list[str] = []
    after: str | None = None
    while True:
        page = page_of(db, labels, after, page_size)
        found += page[:page_size]
        if len(page) <= page_size:
            return found
        after = found[-1]


@pytest.mark.parametrize(
    "labels",
    [
        {"team": "rare"},
        {"env": "prod", "team": "rare"},
        {"team": "rare", "tier": "odd"},
        {"env": "prod", "tier": "odd"},
        {"env": "prod", "team": "common", "tier": "odd"},
        {"env": "staging"},
        {"team": "rare", "env": "staging"},
    ],
)
def test_label_filters_page_through_exactly_the_matching_agents(
    db: Database, labels: dict[str, str]
) -> None:
    expected = [
        f"a{n:05d}"
        for n in range(AGENTS)
        if all(labels_of(n).get(k) == v for k, v in labels.items())
    ]
    assert listed(db, labels, 7) == expected
    assert listed(db, labels, 1000) == expected


def test_labels_are_ranked_by_their_owners_past_the_cursor(db: Database) -> None:
    labels = {"env": "prod", "team": "rare", "tier": "odd"}

    def ranked(after: str | None, filters: dict[str, str] = labels) -> list[Any]:
        return db.read_sync(lambda conn: label_rows.by_rarity(conn, "ns", "agent", filters, after))

    cap = label_rows.PROBE
    assert ranked(None) == [(6, ("team", "rare")), (cap, ("env", "prod")), (cap, ("tier", "odd"))]
    after = f"a{max(RARE):05d}"  # past the last rare agent none has it: still the rarest
    assert ranked(after)[0] == (0, ("team", "rare"))
    assert ranked(None, {"env": "prod"}) == [(cap, ("env", "prod"))]  # one: not counted


# -- the work a page costs on SQLite, in hundreds of virtual machine steps ------------------
def sqlite_db(tmp_path: Path, agents: list[tuple[str, str, str, dict[str, str]]]) -> Database:
    """A SQLite database of ``agents``: (agent_id, status, type, labels) each."""
    database = Database(f"sqlite:///{tmp_path / 'cost.sqlite'}")
    migrate.upgrade(database.write_engine)
    database.start()

    def write(ctx: WriteContext) -> None:
        ctx.conn.execute(
            insert(schema.agents),
            [
                {
                    "namespace": "ns",
                    "agent_id": agent_id,
                    "type": type,
                    "config": b"{}",
                    "labels": json.dumps(labels),
                    "status": status,
                    "generation": 1,
                    "state_version": 0,
                    "state_last_version": 0,
                    "created_at": 1,
                    "updated_at": 1,
                }
                for agent_id, status, type, labels in agents
            ],
        )
        ctx.conn.execute(
            insert(schema.labels),
            [
                {"namespace": "ns", "kind": "agent", "owner_id": agent_id, "key": k, "value": v}
                for agent_id, _, _, labels in agents
                for k, v in labels.items()
            ],
        )

    database.write_sync(write)
    return database


PROBES = 250
"""Counting two filters' candidates (1,000 index entries each) costs about 95; testing
each of 3,000 agents for a label about 600."""


def steps(database: Database, labels: dict[str, str], **filters: Any) -> tuple[int, int]:
    """The work one page of 50 costs, and the agents it holds."""

    def read(conn: Any) -> tuple[int, int]:
        raw = conn.connection.dbapi_connection
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        raw.set_progress_handler(tick, 100)
        try:
            page = agent_rows.list_page(
                conn,
                "ns",
                status=filters.get("status"),
                type=filters.get("type"),
                labels=labels,
                after_id=None,
                limit=50,
                budget=8 << 20,
            )
        finally:
            raw.set_progress_handler(None, 100)
        return count[0], len(page)

    return database.read_sync(read)


def test_a_rare_label_reads_its_own_agents_not_the_namespace(tmp_path: Path) -> None:
    database = sqlite_db(
        tmp_path, [(f"a{n:05d}", "CREATED", "t", labels_of(n)) for n in range(AGENTS)]
    )
    try:
        rare, found = steps(database, {"team": "rare"})
        assert found == len(RARE) and rare < 20
        # Scanning agents, or led by env=prod, the page would test all 3,000 agents.
        both, found = steps(database, {"env": "prod", "team": "rare"})
        assert found == len(RARE) and both < PROBES
    finally:
        database.close()


@pytest.mark.parametrize("rare_filter", [{"status": "FAILED"}, {"type": "rare"}])
def test_a_rarer_status_or_type_leads_instead_of_a_common_label(
    tmp_path: Path, rare_filter: dict[str, str]
) -> None:
    # 20,000 agents carry env=prod; 10 are FAILED, or of type "rare".
    database = sqlite_db(
        tmp_path,
        [
            (
                f"a{n:05d}",
                "FAILED" if n % 2000 == 3 else "CREATED",
                "rare" if n % 2000 == 3 else "t",
                {"env": "prod"},
            )
            for n in range(20_000)
        ],
    )
    try:
        work, found = steps(database, {"env": "prod"}, **rare_filter)
        assert found == 10
        assert work < PROBES  # not the 20,000 owners of env=prod (~1,800)
    finally:
        database.close()


def test_many_labels_scan_agents_in_order_without_sorting(tmp_path: Path) -> None:
    many = {f"k{j:02d}": "v" for j in range(40)}
    database = sqlite_db(tmp_path, [(f"a{n:05d}", "CREATED", "t", many) for n in range(3000)])
    try:
        work, found = steps(database, many)
        # One page of 51 agents, 40 label checks each: not all 3,000 checked, then sorted.
        assert found == 51 and work < 1000
    finally:
        database.close()


# -- PostgreSQL: many label checks cost probes, not planning -------------------------------
def test_postgres_keeps_each_label_check_a_probe_and_compiles_nothing(
    db: Database, database_url: str
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL's planner and JIT")
    many = {f"k{n:02d}": "v" for n in range(16)}
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        assert page_of(db, many, None, 50) == []
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    statement, parameters = seen[-1]

    def explain(conn: Any) -> str:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("EXPLAIN " + statement, parameters)
        return "\n".join(row[0] for row in cursor.fetchall())

    plan = db.read_sync(explain)
    # Semi-joins would let the planner weigh every order of 16 joins, on every request.
    assert "Semi Join" not in plan and plan.count("SubPlan") >= 16, plan
    for engine in (db.engine, db.write_engine):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
