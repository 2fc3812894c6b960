"""Crash loop on SQLite: SIGKILL the server under mixed load, restart, and find every
acknowledged write intact (see workload.py for the writers and the checks)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.faults.workload import LEASE_WAIT, SERVER_ARGS, Cycle, Tally, counts, report
from tests.support.postgres import free_port
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_crash_loop_sqlite(tmp_path: Path) -> None:
    cycles = counts(3, 20)
    seed = random.randrange(1 << 30)
    print(f"[faults] crash loop sqlite: seed={seed}")
    rng = random.Random(seed)
    out_dir = tmp_path / "acks"
    out_dir.mkdir()
    server = ServerProcess(
        free_port(),
        ["--data-dir", str(tmp_path / "data"), "--sqlite-synchronous", "FULL", *SERVER_ARGS],
    )
    tally = Tally()
    server.start(timeout=120)
    try:
        for number in range(cycles):
            cycle = Cycle(server.target, out_dir, number, rng)
            cycle.run(server.kill)
            tally.faults += 1
            time.sleep(LEASE_WAIT)  # leases held at the crash must expire while down
            server.start(timeout=120)
            cycle.check(server.target, tally, interrupted_tasks=True, final=number == cycles - 1)
            print(tally.summary("crash loop sqlite (running)"))
    finally:
        server.kill()
    report(tally.summary("crash loop sqlite") + f" seed={seed}")
    assert tally.checked > 0
    assert not tally.lost, "\n".join(tally.lost[:20])
