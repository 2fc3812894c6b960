"""The lesson's naive pattern, in-process: its ``StateManager.save_agent_state``.

As the lesson writes it: one long-lived ORM ``Session``; per save, ``merge`` of an
``AgentState(agent_id, state_data=<dict>, updated_at=now)`` row (a JSON column) and a
``commit``, then the in-memory cache is updated. Same SQLite settings as the server (WAL,
synchronous=FULL), the same 200-byte document (as the dict the lesson's API takes), the
same 1,000 agents.
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.loadgen import percentile
from bench.scenarios import document


class Base(DeclarativeBase):
    pass


class AgentState(Base):
    __tablename__ = "agent_states"
    agent_id: Mapped[str] = mapped_column(String, primary_key=True)
    state_data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class StateManager:
    """The lesson's sketch, unchanged in substance."""

    def __init__(self, db: Session) -> None:
        self.db = db
        self.cache: dict[str, Any] = {}

    def save_agent_state(self, agent_id: str, state: dict[str, Any]) -> None:
        self.db.merge(AgentState(agent_id=agent_id, state_data=state, updated_at=datetime.now()))
        self.db.commit()
        self.cache[agent_id] = state


def run(directory: Path, duration: float, agents: int = 1000) -> dict[str, Any]:
    engine = create_engine(f"sqlite:///{directory / 'naive.db'}")

    @event.listens_for(engine, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    Base.metadata.create_all(engine)
    state = json.loads(document(200, "naive"))
    rng = random.Random(7)
    ids = [f"naive-{i:06d}" for i in range(agents)]
    latencies: list[float] = []
    with Session(engine) as session:
        manager = StateManager(session)
        deadline = time.perf_counter() + duration
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            manager.save_agent_state(rng.choice(ids), state)
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
