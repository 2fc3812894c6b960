"""Fixtures for client tests: a fake server on loopback and clients pointed at it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stateward.client import AsyncClient, Client, RetryPolicy
from tests.client.fakes import FakeServer

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
