"""The event bus's bookkeeping when a subscription cannot start."""

from __future__ import annotations

from typing import Any

import pytest

from stateward.server import metrics
from stateward.server.events_bus import EventBus
from stateward.storage.errors import StorageUnavailable
from stateward.storage.events import EventFilter


class DownDatabase:
    """A database that answers nothing (an outage)."""

    dialect = "sqlite"

    def on_commit(self, listener: Any) -> None:
        pass

    async def read(self, fn: Any) -> Any:
        raise StorageUnavailable("database error: connection refused")


async def test_subscriptions_refused_in_an_outage_leave_no_count_behind() -> None:
    down: Any = DownDatabase()
    bus = EventBus(down, buffer=16, max_subscribers=10, encode=lambda e: e)
    before = metrics.SUBSCRIBERS._value.get()
    for _ in range(5):
        with pytest.raises(StorageUnavailable):
            await bus.subscribe("default", EventFilter())
    assert bus.count == 0
    assert metrics.SUBSCRIBERS._value.get() == before
