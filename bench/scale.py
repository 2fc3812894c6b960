"""Scale (bench-full): page latency at 10k vs 1M events, start-to-SERVING, bytes per event.

The small database is built over RPC; the bulk (to 1M events, 100k agents, 100k task
runs) is inserted straight into the tables with SQLAlchemy Core executemany while
the server is stopped, which is what a year of traffic would leave behind, minus
the hours it would take to push it through the API. Bulk events are stored as the
server stores AppendEvents batches: packed rows of ``PACK`` events of one run.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import create_engine, func, insert, select, update

from bench.scenarios import document
from bench.seed import seed
from bench.server import Stateward
from stateward.storage import event_packs, schema
from stateward.v1 import execution_pb2, execution_pb2_grpc

NAMESPACE = "default"
BATCH = 20_000
PACK = 100
"""Events per bulk row: each row is one AppendEvents batch of 100 events of one run, as
the server stores it (storage/event_packs.py), the runs taking turns."""


async def _small(target: str, run_id: str, events: int, tasks: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        data = document(200, "scale")
        batch = execution_pb2.AppendEventsRequest(
            events=[
                execution_pb2.NewEvent(type="bench.scale", data_json=data, run_id=run_id)
                for _ in range(1000)
            ]
        )
        for _ in range(events // 1000):
            await stub.AppendEvents(batch)
        for i in range(tasks):
            await stub.StartTaskRun(
                execution_pb2.StartTaskRunRequest(
                    run_id=run_id, task_id=f"t{i}", agent_id="scale-agent"
                )
            )


def _db_bytes(data_dir: Path) -> int:
    db = data_dir / "stateward.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in data_dir.glob("stateward.db*"))


def _bulk(data_dir: Path, events: int, agents: int, tasks: int) -> int:
    engine = create_engine(f"sqlite:///{data_dir / 'stateward.db'}")
    now = time.time_ns() // 1000
    data = document(200, "bulk")
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA synchronous=OFF")  # seeding only; the server reopens with FULL
        head = int(
            conn.execute(select(func.coalesce(func.max(schema.events.c.sequence), 0))).scalar_one()
        )
        rows = [
            dict(
                namespace=NAMESPACE,
                agent_id=f"bulk-{i:07d}",
                type="bulk",
                config=b"{}",
                labels="{}",
                status="ACTIVE",
                generation=1,
                state_version=0,
                state_last_version=0,
                created_at=now,
                updated_at=now,
            )
            for i in range(agents)
        ]
        for i in range(0, len(rows), BATCH):
            conn.execute(insert(schema.agents), rows[i : i + BATCH])
        runs = [
            dict(
                namespace=NAMESPACE,
                run_id=f"bulkrun-{i:06d}",
                workflow_name="bulk",
                agent_id=f"bulk-{i:07d}",
                status="RUNNING",
                input=b"null",
                labels="{}",
                attempt=1,
                root_run_id=f"bulkrun-{i:06d}",
                cancel_requested=False,
                created_at=now,
                started_at=now,
                updated_at=now,
            )
            for i in range(max(1, tasks // 10))
        ]
        conn.execute(insert(schema.workflow_runs), runs)
        task_rows = [
            dict(
                namespace=NAMESPACE,
                task_run_id=f"bulktask-{i:07d}",
                run_id=runs[i % len(runs)]["run_id"],
                task_id=f"t{i}",
                agent_id=f"bulk-{i % agents:07d}",
                attempt=1,
                status="RUNNING",
                input=b"null",
                cancel_requested=False,
                started_at=now,
                seq=head + i + 1,
            )
            for i in range(tasks)
        ]
        for i in range(0, len(task_rows), BATCH):
            conn.execute(insert(schema.task_runs), task_rows[i : i + BATCH])
        seq = head
        packed = event_packs.pack([data] * PACK, None, [None] * PACK)
        made = 0  # rows
        while seq < events:
            chunk = []
            for _ in range(BATCH // PACK):
                span = min(PACK, events - seq)
                if span <= 0:
                    break
                run = runs[made % len(runs)]
                body = (
                    packed if span == PACK else event_packs.pack([data] * span, None, [None] * span)
                )
                chunk.append(
                    dict(
                        namespace=NAMESPACE,
                        sequence=seq + span,
                        span=span,
                        type="bench.bulk",
                        agent_id=run["agent_id"],
                        run_id=run["run_id"],
                        data=body if span > 1 else data,
                        created_at=now + seq + span,
                    )
                )
                seq += span
                made += 1
            conn.execute(insert(schema.events), chunk)
        conn.execute(
            update(schema.namespaces)
            .where(schema.namespaces.c.namespace == NAMESPACE)
            .values(event_head=seq)
        )
    engine.dispose()
    return seq


def _pages(bench: Any, server: Stateward, run_id: str, head: int, label: str) -> dict[str, Any]:
    out = {}
    for scenario, params in (
        ("list_events", {"run_id": run_id, "head": head}),
        ("agent_history", {"agent_id": "scale-agent"}),
    ):
        r = bench.load(
            server.target, scenario, 4, server.pid, params=params, label=f"{label}_{scenario}"
        )
        out[scenario] = r.p99_ms
    return out


def run(bench: Any, root: Path) -> None:
    args = bench.args
    data_dir = root / "scale-data"
    server = Stateward(data_dir).start()
    try:
        made = seed(server.target, {"runs": [("scale", 1)]})
        run_id = made["scale"][0]
        small_events = 10_000
        asyncio.run(_small(server.target, run_id, small_events, 200))
        small = _pages(bench, server, run_id, small_events, "scale10k")
    finally:
        server.stop()
    restarted = Stateward(data_dir).start()  # start-to-SERVING of the small database, for reference
    small_start_s = restarted.start_to_serving_s
    restarted.stop()
    small_bytes = _db_bytes(data_dir)
    t0 = time.monotonic()
    total = _bulk(data_dir, args.scale_events, args.scale_agents, args.scale_agents)
    print(
        f"  seeded to {total:,} events, {args.scale_agents:,} agents "
        f"in {time.monotonic() - t0:.0f} s",
        flush=True,
    )
    big_bytes = _db_bytes(data_dir)
    os.sync()
    server = Stateward(data_dir).start()
    try:
        start_s = server.start_to_serving_s
        big = _pages(bench, server, run_id, small_events, "scale1M")
    finally:
        server.stop()
    report = bench.report
    report.raw["scale"] = {
        "small_p99_ms": small,
        "big_p99_ms": big,
        "events": total,
        "start_s": start_s,
        "small_start_s": small_start_s,
        "db_bytes_small": small_bytes,
        "db_bytes_big": big_bytes,
    }
    label = f"{total / 1e6:g}M events"
    report.at_most(
        f"ListEvents page p99 at {label}",
        big["list_events"],
        "ms",
        "at 10k events",
        small["list_events"],
        1.5,
    )
    report.at_most(
        f"GetAgentHistory page p99 at {label}",
        big["agent_history"],
        "ms",
        "at 10k events",
        small["agent_history"],
        1.5,
    )
    report.add(
        f"start to SERVING with {label}, {args.scale_agents:,} agents",
        start_s,
        "s",
        ref_name="same at 10k events (process start included)",
        ref=small_start_s,
        target="<= 3 s",
        ok=start_s <= 3.0,
    )
    report.add(
        "database bytes per event (bulk, 200 B payload, all indexes)",
        (big_bytes - small_bytes) / max(1, total - small_events),
        "B/event",
    )
