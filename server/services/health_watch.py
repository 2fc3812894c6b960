"""Health follows the database: NOT_SERVING while it does not answer, SERVING once it does.

A background job probes ``SELECT 1`` through the read pool every ``interval`` seconds
and reports each change through ``report(serving)`` (the server sets the gRPC health
status of every service). Load balancers and orchestrators then route around a replica
whose database is gone, and back once it returns; calls themselves fail fast with
UNAVAILABLE meanwhile (the storage layer translates connection errors).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import Connection, text

from stateward.storage import Database

log = logging.getLogger(__name__)


def _select_one(conn: Connection) -> None:
    conn.execute(text("SELECT 1")).scalar_one()


class HealthWatch:
    def __init__(
        self,
        db: Database,
        report: Callable[[bool], Awaitable[None]],
        interval: float = 0.5,
        probe_timeout: float = 5.0,
    ) -> None:
        self.db = db
        self.report = report
        self.interval = interval
        self.probe_timeout = probe_timeout
        self.serving = True  # the server reports SERVING before background jobs start

    async def probe(self) -> bool:
        """Whether the database answered within ``probe_timeout``."""
        try:
            # asyncio.timeout, not wait_for, which on 3.11 can swallow a cancellation.
            async with asyncio.timeout(self.probe_timeout):
                await self.db.read(_select_one)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any failure means: not answering
            if self.serving:
                log.warning("database not answering: %s; health is NOT_SERVING", error)
            return False
        return True

    async def run(self) -> None:
        while True:
            serving = await self.probe()
            if serving != self.serving:
                await self.report(serving)
                self.serving = serving
                if serving:
                    log.warning("database answering again; health is SERVING")
            await asyncio.sleep(self.interval)
