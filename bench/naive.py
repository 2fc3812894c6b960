"""The lesson's naive pattern, in-process: one ORM ``session.merge`` + ``commit`` per save.

Same SQLite settings as the server (WAL, synchronous=FULL), same 200-byte document.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, LargeBinary, String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.loadgen import percentile
from bench.scenarios import document


class Base(DeclarativeBase):
    pass


class AgentState(Base):
    __tablename__ = "agent_state"
    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    document: Mapped[bytes] = mapped_column(LargeBinary)


def run(directory: Path, duration: float, agents: int = 1000) -> dict[str, Any]:
    engine = create_engine(f"sqlite:///{directory / 'naive.db'}")

    @event.listens_for(engine, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    Base.metadata.create_all(engine)
    doc = document(200, "naive")
    rng = random.Random(7)
    ids = [f"naive-{i:06d}" for i in range(agents)]
    latencies: list[float] = []
    deadline = time.perf_counter() + duration
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        with Session(engine) as session:
            session.merge(AgentState(agent_id=rng.choice(ids), document=doc))
            session.commit()
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    engine.dispose()
    latencies.sort()
    return {
        "calls": len(latencies),
        "calls_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
    }
