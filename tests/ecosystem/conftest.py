"""Fixtures for the ecosystem tests (LangGraph, the lesson's managers, the Node client)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stateward.server.config import Settings
from tests.support.server import ServerThread


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[ServerThread]:
    """A server on SQLite only, for clients whose behaviour the database cannot change."""
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        database_url=f"sqlite:///{tmp_path / 'stateward.db'}",
        grace_period=0.5,
        log_level="WARNING",
        sqlite_synchronous="NORMAL",  # no crash tests here: spare the fsyncs
    )
    running = ServerThread(settings).start()
    yield running
    running.close()
