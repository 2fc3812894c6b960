"""Fixtures shared by every test: databases, servers and clients.

``backend`` runs a test once on SQLite and once on a throwaway PostgreSQL. With
CI=true a PostgreSQL that cannot start fails the run instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stateward.server.config import Settings
from tests.support.postgres import PostgresCluster, PostgresUnavailable
from tests.support.server import ServerThread

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster().start()
    except PostgresUnavailable as error:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI: {error}")
        pytest.skip(f"PostgreSQL unavailable: {error}")
    yield cluster
    cluster.destroy()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'stateward.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        database_url=database_url,
        grace_period=0.5,
        log_level="WARNING",
        sweep_interval=0.05,
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    """A running server on a loopback port, on SQLite and on PostgreSQL."""
    running = ServerThread(settings).start()
    yield running
    running.close()
