"""Bytes per event and per state version on SQLite, measured through a real server.

    .venv/bin/python scripts/measure_sizing.py [--agents 50] [--versions 40] [--events 20000]

Writes through the client (as production would), then VACUUMs and compares file sizes,
so the numbers include indexes. Event data and state documents are JSON of the sizes
given; scale the results by your own payload sizes (rows cost roughly payload + overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
from pathlib import Path

from stateward.client import AsyncClient, NewEvent
from stateward.server.app import StatewardServer
from stateward.server.config import Settings


def file_bytes(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with sqlite3.connect(db) as conn:
        conn.execute("VACUUM")
    return db.stat().st_size


async def measure(args: argparse.Namespace, root: Path) -> None:
    db = root / "stateward.db"
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=str(root / "data"),
        database_url=f"sqlite:///{db}",
        log_level="WARNING",
        state_history=args.versions,
    )
    server = StatewardServer(settings)
    port = await server.start()
    try:
        async with AsyncClient.connect(f"127.0.0.1:{port}") as client:
            for i in range(args.agents):
                await client.create_agent(f"agent-{i}", "planner")
            await server.stop()
            empty = await asyncio.to_thread(file_bytes, db)
            port = await server.start()
        async with AsyncClient.connect(f"127.0.0.1:{port}") as client:
            document = {"notes": "x" * args.doc_bytes}
            for version in range(args.versions):
                await asyncio.gather(
                    *(
                        client.save_state(f"agent-{i}", {**document, "v": version})
                        for i in range(args.agents)
                    )
                )
            await server.stop()
            with_states = await asyncio.to_thread(file_bytes, db)
            port = await server.start()
        async with AsyncClient.connect(f"127.0.0.1:{port}") as client:
            run = await client.start_workflow_run("sizing", agent_id="agent-0")
            data = {"payload": "y" * args.event_bytes}
            for _ in range(args.events // 100):
                await client.append_events(
                    [NewEvent("step", data, run_id=run.run_id) for _ in range(100)]
                )
    finally:
        await server.stop()
    with_events = await asyncio.to_thread(file_bytes, db)
    versions = args.agents * args.versions
    events = args.events // 100 * 100
    # Each SaveState also appends a state.saved event: its bytes are part of a version's cost.
    print(f"state versions: {versions} of a {args.doc_bytes}-byte document (+ their events)")
    print(f"  {(with_states - empty) / versions:.0f} bytes per state version")
    print(f"events: {events} with {args.event_bytes}-byte data")
    print(f"  {(with_events - with_states) / events:.0f} bytes per event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--versions", type=int, default=40)
    parser.add_argument("--doc-bytes", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--event-bytes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(measure(args, Path(root)))


if __name__ == "__main__":
    main()
