"""Fixtures for client tests: a fake server on loopback (for failure injection), the real
server, and clients pointed at them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from stateward.client import AsyncClient, Client, RetryPolicy
from stateward.server.config import Settings
from tests.client.fakes import FakeServer
from tests.support.server import ServerThread

FAST_RETRY = RetryPolicy(initial_backoff=0.001, max_backoff=0.01)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.close()


@pytest.fixture
def client(fake: FakeServer) -> Iterator[Client]:
    with Client.connect(fake.target, retry=FAST_RETRY, timeout=5) as c:
        yield c


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest, fake: FakeServer) -> Callable[..., Any]:
    """``call("get_agent", "a1", **kw)`` on a Client or, in a fresh event loop, an AsyncClient.

    A test using it runs twice, so both clients meet the same assertions.
    """

    def on_sync(method: str, *args: Any, **kwargs: Any) -> Any:
        with Client.connect(fake.target, retry=kwargs.pop("retry", FAST_RETRY), timeout=5) as c:
            return getattr(c, method)(*args, **kwargs)

    def on_async(method: str, *args: Any, **kwargs: Any) -> Any:
        async def go() -> Any:
            retry = kwargs.pop("retry", FAST_RETRY)
            async with AsyncClient.connect(fake.target, retry=retry, timeout=5) as c:
                return await getattr(c, method)(*args, **kwargs)

        return asyncio.run(go())

    return on_sync if request.param == "sync" else on_async


# -- a real server ------------------------------------------------------------------------
# Most client behaviour does not depend on the database, so most tests share one SQLite
# server per module (``live``: a client in a namespace of its own). Tests that restart
# the server, or that mean to run on both databases, take the ``server`` fixture;
# `SQLITE_ONLY` pins those that need a server of their own but not PostgreSQL.

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
MIGRATIONS = "tests.support.sample_migrations"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings, plus the sample state migrations (type ``counter``). SQLite
    skips the fsync per commit: these tests are about the client, not durability."""
    return replace(settings, state_migrations=MIGRATIONS, sqlite_synchronous="NORMAL")


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    base = tmp_path_factory.mktemp("client-server")
    running = ServerThread(
        Settings(
            listen="127.0.0.1:0",
            data_dir=str(base / "data"),
            database_url=f"sqlite:///{base / 'stateward.db'}",
            grace_period=0.5,
            log_level="WARNING",
            sweep_interval=0.05,
            state_migrations=MIGRATIONS,
            sqlite_synchronous="NORMAL",
        )
    ).start()
    yield running
    running.close()


@pytest.fixture
def live(shared_server: ServerThread) -> Iterator[Client]:
    """A client of the shared real server, in a namespace no other test uses."""
    namespace = f"t-{uuid.uuid4().hex[:12]}"
    with Client.connect(shared_server.target, timeout=10, namespace=namespace) as c:
        yield c


def async_twin(client: Client) -> AsyncClient:
    """An AsyncClient for the same server and namespace as ``client`` (create it in the
    event loop that uses it)."""
    return AsyncClient.connect(client.options.target, namespace=client.options.namespace)


@pytest.fixture
def agent(live: Client) -> str:
    """An INITIALIZED agent (state may be written) of a type without migrations."""
    live.create_agent("a1", "planner")
    live.initialize_agent("a1")
    return "a1"


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
