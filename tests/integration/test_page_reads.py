"""Wide listings read their rows' sizes first, then no more rows than one response holds
(storage/pages.py), on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stateward.storage import Database, WriteContext, migrate
from stateward.storage import agents as agent_rows
from stateward.storage.records import AgentRecord

CONFIG = b'"' + b"x" * 100_000 + b'"'  # ~100 KB each


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate.upgrade(database.write_engine)
    database.start()
    yield database
    database.close()


def test_a_page_of_big_records_reads_only_what_its_budget_holds(db: Database) -> None:
    def seed(ctx: WriteContext) -> None:
        for n in range(30):
            record = AgentRecord("ns", f"a{n:02d}", "t", CONFIG, {}, "CREATED", 1, 0, 0, 1, 1)
            agent_rows.insert_agent(ctx.conn, record)

    db.write_sync(seed)

    def listed(budget: int | None, after: str | None = None) -> list[str]:
        return db.read_sync(
            lambda conn: [
                r.agent_id
                for r in agent_rows.list_page(
                    conn,
                    "ns",
                    status=None,
                    type=None,
                    labels={},
                    after_id=after,
                    limit=1000,
                    budget=budget,
                )
            ]
        )

    assert len(listed(None)) == 30  # unbounded: every row, documents and all
    # 512 KB hold five ~101 KB rows; the sixth passes the budget and tells that more follow.
    assert listed(512_000) == [f"a{n:02d}" for n in range(6)]
    assert listed(512_000, after="a26") == ["a27", "a28", "a29"]  # the end: nothing passes
    assert listed(1) == ["a00"]  # the first row is always read
