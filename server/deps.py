"""What the services of one server process share, and the hooks to run with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from stateward.server.config import Settings
from stateward.storage import Database

log = logging.getLogger(__name__)


@dataclass
class Deps:
    """Handed to each area's ``register``; owned and driven by StatewardServer.

    - ``startup`` hooks run (in order, awaited) after migrations, before SERVING;
    - ``background`` jobs start after SERVING and are cancelled on shutdown;
    - ``shutdown`` hooks run first thing on shutdown (end streams cleanly), awaited.
    """

    settings: Settings
    db: Database
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    extras: dict[str, object] = field(default_factory=dict)  # shared singletons by name
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_background(self) -> None:
        for job in self.background:
            task = asyncio.create_task(self._supervise(job), name=getattr(job, "__name__", "job"))
            self._tasks.append(task)

    async def stop_background(self, timeout: float = 10.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a job that ignores cancellation must not hold up shutdown forever.
            _, stuck = await asyncio.wait(self._tasks, timeout=timeout)
            for task in stuck:
                log.error("background job %s ignored cancellation; abandoning it", task.get_name())
        self._tasks.clear()

    @staticmethod
    async def _supervise(job: Callable[[], Awaitable[None]]) -> None:
        """Restart a background job that fails, after a pause; stop on cancellation."""
        while True:
            try:
                await job()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "background job %s failed; restarting in 1 s", getattr(job, "__name__", job)
                )
                await asyncio.sleep(1.0)
