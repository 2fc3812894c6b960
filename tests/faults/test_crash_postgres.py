"""Crash loop on PostgreSQL (fsync on): some cycles SIGKILL the Stateward server, some
stop PostgreSQL itself with ``pg_ctl -m immediate`` (no checkpoint, no clean
shutdown: a crash as far as the database is concerned). Same checks as on SQLite."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.workload import (
    LEASE_WAIT,
    SERVER_ARGS,
    Cycle,
    Tally,
    counts,
    report,
    wait_answering,
)
from tests.support.postgres import PostgresCluster, PostgresUnavailable, free_port
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(1800)]


@pytest.fixture
def durable_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(fsync=True)
    try:
        cluster.start()
    except PostgresUnavailable as error:
        pytest.skip(f"PostgreSQL unavailable: {error}")
    yield cluster
    cluster.destroy()


def test_crash_loop_postgres(durable_cluster: PostgresCluster, tmp_path: Path) -> None:
    cycles = counts(2, 10)
    seed = random.randrange(1 << 30)
    print(f"[faults] crash loop postgres: seed={seed}")
    rng = random.Random(seed)
    out_dir = tmp_path / "acks"
    out_dir.mkdir()
    url = durable_cluster.create_database()
    server = ServerProcess(
        free_port(), ["--data-dir", str(tmp_path / "data"), "--database-url", url, *SERVER_ARGS]
    )
    tally = Tally()
    kinds = {"server": 0, "postgres": 0}
    server.start(timeout=120)
    try:
        for number in range(cycles):
            cycle = Cycle(server.target, out_dir, number, rng)
            kill_server = number % 2 == 0
            if kill_server:
                cycle.run(server.kill)
                time.sleep(LEASE_WAIT)  # leases held at the crash expire while down
                server.start(timeout=120)
            else:
                cycle.run(lambda: durable_cluster.stop("immediate"))
                time.sleep(rng.uniform(0.5, 3.0))
                durable_cluster.start()
                wait_answering(server)  # the same server process recovers by itself
            kinds["server" if kill_server else "postgres"] += 1
            tally.faults += 1
            # With the server up throughout a database crash its sweeper may time leases
            # out (TIMED_OUT) instead of the start-up scan interrupting them.
            cycle.check(
                server.target, tally, interrupted_tasks=kill_server, final=number == cycles - 1
            )
            print(tally.summary("crash loop postgres (running)"))
    finally:
        server.kill()
    report(
        tally.summary("crash loop postgres") + f" seed={seed} server_kills={kinds['server']} "
        f"postgres_immediate_stops={kinds['postgres']}"
    )
    assert tally.checked > 0
    assert not tally.lost, "\n".join(tally.lost[:20])
