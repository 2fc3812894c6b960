"""LangGraph: put + get_tuple of a ~1 KiB checkpoint through StatewardSaver and LangGraph's savers.

Each saver runs the same loop at 1 thread and at 16 threads (one LangGraph thread
id per worker thread). Savers that are not installed are reported as skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import procstat


def _checkpoint(step: int) -> dict[str, Any]:
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6

    checkpoint = empty_checkpoint()
    checkpoint["id"] = str(uuid6(clock_seq=step))
    checkpoint["channel_values"] = {"messages": "m" * 900, "step": step}
    checkpoint["channel_versions"] = {"messages": step + 1}
    return dict(checkpoint)


def pairs_per_s(
    saver: Any, threads: int, duration: float, tag: str, server_pid: int | None = None
) -> dict[str, Any]:
    """Pairs per second; with ``server_pid``, also the server's and this process's CPU per
    pair (the robust figures on a shared machine)."""

    def worker(index: int) -> int:
        config: Any = {"configurable": {"thread_id": f"{tag}-t{index}", "checkpoint_ns": ""}}
        done = 0
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            stored = saver.put(
                config, _checkpoint(done), {"source": "loop", "step": done}, {"messages": done + 1}
            )
            if saver.get_tuple(stored) is None:
                raise RuntimeError("get_tuple lost the checkpoint just put")
            config = stored
            done += 1
        return done

    server_cpu = procstat.cpu_seconds(server_pid) if server_pid else 0.0
    client_cpu = procstat.own_cpu_seconds()
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(worker, range(threads)))
    elapsed = time.perf_counter() - start
    result = {"threads": threads, "pairs": total, "pairs_per_s": total / elapsed}
    result["client_cpu_us_per_pair"] = (procstat.own_cpu_seconds() - client_cpu) * 1e6 / total
    if server_pid:
        server_cpu = procstat.cpu_seconds(server_pid) - server_cpu
        result["server_cpu_us_per_pair"] = server_cpu * 1e6 / total
    return result


def available() -> str | None:
    """None when StatewardSaver can run, else why not."""
    try:
        import stateward.client.langgraph  # noqa: F401
    except ImportError as error:
        return f"stateward.client.langgraph not importable: {error}"
    return None


def sqlite_saver(directory: Path) -> tuple[Any, Callable[[], None]] | str:
    try:
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:
        return (
            "langgraph-checkpoint-sqlite is not installed (pip install langgraph-checkpoint-sqlite)"
        )
    conn = sqlite3.connect(directory / "langgraph.db", check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    return saver, conn.close


def postgres_saver(url: str | None) -> tuple[Any, Callable[[], None]] | str:
    if not url:
        return "no PostgreSQL for this run (bench-full starts one)"
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg_pool import ConnectionPool
    except ImportError:
        return "langgraph-checkpoint-postgres is not installed (pip install "
        "langgraph-checkpoint-postgres)"
    pool = ConnectionPool(url, max_size=20, kwargs={"autocommit": True, "prepare_threshold": 0})
    saver = PostgresSaver(pool)
    saver.setup()
    return saver, pool.close


def stateward_saver(target: str) -> tuple[Any, Callable[[], None]]:
    from stateward.client.langgraph import StatewardSaver

    saver = StatewardSaver(target)
    return saver, saver.close
