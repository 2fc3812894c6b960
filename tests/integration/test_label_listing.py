"""Agents filtered by labels are read from the rarest label's owners, in agent_id order
(storage/agents.py, labels.rarest): a filter matching a few agents reads those agents,
not the namespace's, and paging through it loses and repeats nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import insert

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


def test_the_rarest_label_leads_counting_owners_after_the_cursor(db: Database) -> None:
    labels = {"env": "prod", "team": "rare", "tier": "odd"}
    lead = db.read_sync(lambda conn: label_rows.rarest(conn, "ns", "agent", labels, None))
    assert lead == ("team", "rare")
    # Past the last rare agent, none has it: still the rarest.
    after = f"a{max(RARE):05d}"
    lead = db.read_sync(lambda conn: label_rows.rarest(conn, "ns", "agent", labels, after))
    assert lead == ("team", "rare")
    common = {"env": "prod", "tier": "odd"}  # odd agents are half of env=prod's
    lead = db.read_sync(lambda conn: label_rows.rarest(conn, "ns", "agent", common, None))
    assert lead == ("tier", "odd") or label_rows.PROBE <= AGENTS // 2


def test_a_rare_label_reads_its_own_agents_not_the_namespace(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("counts SQLite's virtual machine steps")
    database = Database(database_url)
    migrate.upgrade(database.write_engine)
    database.start()
    try:
        database.write_sync(seed)

        def steps(labels: dict[str, str]) -> int:
            def read(conn: object) -> int:
                raw = conn.connection.dbapi_connection  # type: ignore[attr-defined]
                count = [0]

                def tick() -> int:
                    count[0] += 1
                    return 0

                raw.set_progress_handler(tick, 100)
                try:
                    agent_rows.list_page(
                        conn,  # type: ignore[arg-type]
                        "ns",
                        status=None,
                        type=None,
                        labels=labels,
                        after_id=None,
                        limit=50,
                    )
                finally:
                    raw.set_progress_handler(None, 100)
                return count[0]

            return database.read_sync(read)

        rare = steps({"team": "rare"})
        # The whole namespace is 3,000 agents; six carry team=rare. Led by env=prod (or
        # scanning agents), the listing would test every agent.
        assert steps({"env": "prod", "team": "rare"}) < rare * 3 + label_rows.PROBE // 10
        assert rare < AGENTS // 10
    finally:
        database.close()
