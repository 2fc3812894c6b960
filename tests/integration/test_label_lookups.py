"""Checkpoint label lookups (storage/checkpoints.py, RARE_LABEL): a rare label's owners come
from the (namespace, key, value) index, then their rows by primary key, filtered and paged
as the SQL of the other paths would; and those two statements keep their index whether or
not the database has statistics (PostgreSQL's planner has none on a young table)."""

from __future__ import annotations

import sqlalchemy

from stateward.server.config import Settings
from stateward.storage import checkpoints as rows
from stateward.storage import migrate, schema
from stateward.storage.sql import Sql
from stateward.v1 import lifecycle_pb2
from stateward.v1 import recovery_pb2 as pb
from tests.support.recovery import Client
from tests.support.server import ServerThread

VALUE_INDEX = "ix_labels_namespace_key_value_kind_owner_id"
PRIMARY_KEYS = ("pk_checkpoints", "sqlite_autoindex_checkpoints_1")
MANIFEST = {
    "namespace": "default",
    "state_version": 0,
    "size": 0,
    "stored_size": 0,
    "sha256": "0" * 64,
    "compression": "none",
    "blob_key": "",
    "labels": "{}",
    "created_at": 1,
    "payload": b"x" * 1024,
}


def listed(client: Client, agent_id: str, page_size: int = 1000, **labels: str) -> list[str]:
    request = pb.ListCheckpointsRequest(agent_id=agent_id, labels=labels, page_size=page_size)
    found: list[str] = []
    while True:
        page = client.recovery.ListCheckpoints(request)
        found += [c.checkpoint_id for c in page.checkpoints]
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


def test_a_rare_label_is_filtered_and_paged_like_the_other_paths(
    server: ServerThread, settings: Settings
) -> None:
    client = Client(server.target, settings)
    try:
        agent, other = client.agent("a-1"), client.agent("a-2")
        mine = [
            client.create(agent, b"p%d" % n, labels={"id": "x", "n": str(n % 2)}) for n in range(5)
        ]
        theirs = client.create(other, labels={"id": "x", "n": "0"})
        newest_first = [c.checkpoint_id for c in reversed(mine)]

        assert listed(client, agent, id="x") == newest_first
        assert listed(client, agent, page_size=2, id="x") == newest_first  # keyset pages
        assert listed(client, agent, page_size=2, id="x", n="0") == newest_first[::2]
        assert listed(client, agent, id="x", n="2") == []
        assert listed(client, "", page_size=4, id="x") == [theirs.checkpoint_id, *newest_first]
        request = pb.ListCheckpointsRequest(
            agent_id=agent, labels={"id": "x"}, include_payloads=True
        )
        payloads = [c.payload for c in client.recovery.ListCheckpoints(request).checkpoints]
        assert payloads == [b"p4", b"p3", b"p2", b"p1", b"p0"]

        # An agent named like a checkpoint, carrying a label that checkpoint lacks: the
        # lookup reads the owners of every kind and keeps only checkpoints.
        twin = mine[0].checkpoint_id
        client.lifecycle.CreateAgent(
            lifecycle_pb2.CreateAgentRequest(agent_id=twin, type="t", labels={"only": "agent"})
        )
        assert listed(client, "", only="agent") == []
        assert listed(client, agent, only="agent") == []
    finally:
        client.close()


def _plan(engine: sqlalchemy.Engine, sql: Sql, params: tuple[str, ...]) -> str:
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("EXPLAIN " + sql.postgresql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql.sqlite, params)
        return "\n".join(str(row) for row in cursor.fetchall())


def test_rare_label_statements_use_one_index_with_or_without_statistics(
    database_url: str,
) -> None:
    # The owners lookup has one usable index. The probes weigh the primary key against a
    # namespace-wide agent index that PostgreSQL, without statistics, takes for 0.5% of the
    # table: on LangGraph-sized rows (1 KiB) the key wins from a few hundred rows on.
    engine = sqlalchemy.create_engine(database_url)
    try:
        migrate.upgrade(engine)
        checkpoints = [
            {**MANIFEST, "checkpoint_id": f"ckpt_{n:06d}", "agent_id": f"a-{n % 3}"}
            for n in range(2000)
        ]
        labels = [
            {"namespace": "default", "kind": "checkpoint", "owner_id": f"ckpt_{n:06d}", **pair}
            for n in range(2000)
            for pair in ({"key": "id", "value": f"x-{n}"}, {"key": "n", "value": str(n % 4)})
        ]
        with engine.begin() as conn:
            conn.execute(schema.checkpoints.insert(), checkpoints)
            conn.execute(schema.labels.insert(), labels)
        postgresql = engine.dialect.name == "postgresql"
        probe = ("ckpt_a", "ckpt_b", "default") if postgresql else ("default", "ckpt_a", "ckpt_b")
        for analyzed in (False, True):
            if analyzed:
                with engine.begin() as conn:
                    conn.exec_driver_sql("ANALYZE")
            owners = _plan(engine, rows._OWNERS, ("default", "id", "x-7"))
            assert VALUE_INDEX in owners, owners
            ids = _plan(engine, rows._ids_sql(2, True, postgresql), probe)
            assert any(name in ids for name in PRIMARY_KEYS), ids
    finally:
        engine.dispose()
