"""Live fan-out of committed events to SubscribeEvents streams.

One ``Channel`` per namespace with subscribers publishes that namespace's events in
sequence order, each exactly once, with no gaps:

- events committed by this process arrive from the writer thread (``db.on_commit``)
  and are published at once when they continue the channel's head;
- anything else (commits by another replica, announced by PostgreSQL NOTIFY or found
  by a subscriber's periodic head check) is read back from the database. Sequences
  follow commit order, so every sequence below a committed one is already committed:
  a gap is always filled by one range read.

Each subscription has a bounded buffer. Publishing never waits: a subscription whose
buffer is full is disarmed (buffer dropped) and its stream goes back to catch-up
reads from the database, so a slow reader never blocks writers or other readers and
never loses an event. See ``ExecutionService.subscribe`` for the reader's side.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from stateward.server import metrics
from stateward.server.domain.errors import ResourceExhausted, Unavailable
from stateward.storage import Database, EventDraft, expand
from stateward.storage import events as event_log
from stateward.storage.events import EventFilter, HeadNotifier

log = logging.getLogger(__name__)

FILL_CHUNK = 2000  # events per gap-filling read
STASH_LIMIT = 10_000  # local events held while a gap is filled; beyond, re-read them
POLL_INTERVAL = 1.0  # seconds between head checks under LISTEN/NOTIFY (PostgreSQL)


class Subscription:
    """One stream's view of a channel: its filter and its bounded buffer."""

    __slots__ = ("namespace", "filter", "match_all", "buffer", "limit", "armed", "wakeup")

    def __init__(self, namespace: str, flt: EventFilter, limit: int) -> None:
        self.namespace = namespace
        self.filter = flt
        self.match_all = flt.empty
        self.limit = limit
        self.buffer: deque[tuple[int, Any]] = deque()  # (sequence, encoded event)
        self.armed = False  # receives live events; False while catching up from the log
        self.wakeup = asyncio.Event()


class Channel:
    __slots__ = ("namespace", "head", "known", "stash", "subscribers", "ready", "filler")

    def __init__(self, namespace: str, ready: asyncio.Future[None]) -> None:
        self.namespace = namespace
        self.head: int | None = None  # published up to here (None until the first head read)
        self.known = 0  # newest committed sequence heard of
        self.stash: deque[Any] = deque()  # local events waiting for a gap before them
        self.subscribers: set[Subscription] = set()
        self.ready = ready
        self.filler: asyncio.Task[None] | None = None


class EventBus:
    """Per-process fan-out; create once per server and share through ``deps.extras``."""

    def __init__(
        self, db: Database, *, buffer: int, max_subscribers: int, encode: Callable[[Any], Any]
    ) -> None:
        self.db = db
        self.buffer = buffer
        self.max_subscribers = max_subscribers
        self.encode = encode
        self.closed = False
        self.count = 0  # open subscriptions
        self.overflows = 0  # buffers that overflowed (their streams fell back to catch-up)
        self._channels: dict[str, Channel] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # keeps fire-and-forget tasks alive
        self.notifier: HeadNotifier | None = None
        if db.dialect == "postgresql":
            self.notifier = HeadNotifier(db.url, uuid.uuid4().hex[:12], self.saw_head)
        db.on_commit(self._on_commit)

    # -- server hooks ------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def listen(self) -> None:
        """Background job (PostgreSQL): NOTIFY our heads, LISTEN for other replicas'."""
        if self.notifier is not None:
            await self.notifier.run(on_connect=self._check_all_heads)

    async def poll(self) -> None:
        """Background job (PostgreSQL): a slow safety net under NOTIFY.

        A notification lost with a dropped connection (or LISTEN refused by a pooler)
        delays other replicas' events by at most this interval.
        """
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            if self._channels:
                await self._read_heads(list(self._channels))

    async def close(self) -> None:
        """End every stream cleanly: their generators return, clients see the end and resume."""
        self.closed = True
        for channel in list(self._channels.values()):
            if channel.filler is not None:
                channel.filler.cancel()
            for sub in channel.subscribers:
                sub.wakeup.set()

    # -- subscriptions ------------------------------------------------
    async def subscribe(self, namespace: str, flt: EventFilter) -> Subscription:
        """Register a subscription (not yet armed) once its channel knows its head."""
        if self.closed:
            raise Unavailable("the server is shutting down; reconnect to resume the subscription")
        if self.count >= self.max_subscribers:
            raise ResourceExhausted(
                f"this server already serves {self.count} subscriptions, its limit "
                f"(max_subscribers={self.max_subscribers}); retry later or use another replica"
            )
        loop = asyncio.get_running_loop()
        channel = self._channels.get(namespace)
        if channel is None:
            channel = Channel(namespace, loop.create_future())
            self._channels[namespace] = channel
            self._spawn(self._init_channel(channel))
        sub = Subscription(namespace, flt, self.buffer)
        channel.subscribers.add(sub)
        self.count += 1
        metrics.SUBSCRIBERS.inc()
        try:
            await asyncio.shield(channel.ready)
        except BaseException:
            self.unsubscribe(sub)
            raise
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        channel = self._channels.get(sub.namespace)
        if channel is None or sub not in channel.subscribers:
            return
        channel.subscribers.discard(sub)
        self.count -= 1
        metrics.SUBSCRIBERS.dec()
        if not channel.subscribers:
            del self._channels[sub.namespace]
            if channel.filler is not None:
                channel.filler.cancel()

    def arm(self, sub: Subscription) -> None:
        """Start buffering live events: every event published from now on that matches.

        Everything published before this call is at or below a committed head, so a
        catch-up read started after it covers the rest.
        """
        sub.buffer.clear()
        sub.armed = True

    def head_of(self, namespace: str) -> int | None:
        channel = self._channels.get(namespace)
        return channel.head if channel is not None else None

    def saw_head(self, namespace: str, head: int) -> None:
        """A committed head learned elsewhere (NOTIFY, a head check): publish up to it."""
        channel = self._channels.get(namespace)
        if channel is None:
            return
        channel.known = max(channel.known, head)
        if channel.head is not None and channel.known > channel.head:
            self._ensure_filler(channel)

    # -- publishing ------------------------------------------------
    def _on_commit(self, rows: list[EventDraft]) -> None:
        """Writer thread, after each commit: announce heads, hand the rows to the loop."""
        if self.notifier is not None:
            heads: dict[str, int] = {}
            for row in rows:  # a packed row's sequence is its last event's
                heads[row.namespace] = row.sequence
            for namespace, head in heads.items():
                self.notifier.publish(namespace, head)
        loop = self._loop
        if self._channels and loop is not None and not self.closed:
            try:
                loop.call_soon_threadsafe(self._local, rows)
            except RuntimeError:  # the loop is closing
                pass

    def _local(self, rows: list[EventDraft]) -> None:
        by_namespace: dict[str, list[EventDraft]] = {}
        # Packed rows are expanded only here, and only where someone subscribes.
        for draft in expand([row for row in rows if row.namespace in self._channels]):
            by_namespace.setdefault(draft.namespace, []).append(draft)
        for namespace, drafts in by_namespace.items():
            channel = self._channels[namespace]
            channel.known = max(channel.known, drafts[-1].sequence)
            if (
                channel.head is not None
                and channel.filler is None
                and drafts[0].sequence == channel.head + 1
            ):
                self._publish(channel, drafts)
                continue
            if len(channel.stash) + len(drafts) <= STASH_LIMIT:
                channel.stash.extend(drafts)
            else:
                channel.stash.clear()  # the filler reads them back from the log
            self._ensure_filler(channel)

    def _publish(self, channel: Channel, events: list[Any]) -> None:
        """Hand contiguous events after the channel head to every armed subscription.

        Each event is encoded at most once, whatever the number of subscribers.
        """
        encode = self.encode
        everything: list[tuple[int, Any]] | None = None  # for subscriptions without filters
        encoded: dict[int, Any] = {}
        for sub in channel.subscribers:
            if not sub.armed:
                continue
            if sub.match_all:
                if everything is None:
                    everything = [(event.sequence, encode(event)) for event in events]
                items = everything
            else:
                items = []
                for index, event in enumerate(events):
                    if sub.filter.matches(event):
                        message = encoded.get(index)
                        if message is None:
                            message = encoded[index] = encode(event)
                        items.append((event.sequence, message))
                if not items:
                    continue
            if len(sub.buffer) + len(items) > sub.limit:
                sub.armed = False  # overflow: the stream re-reads from the log
                sub.buffer.clear()
                self.overflows += 1
                metrics.SUBSCRIBER_CATCHUPS.inc()
            else:
                sub.buffer.extend(items)
            sub.wakeup.set()
        channel.head = events[-1].sequence

    def _ensure_filler(self, channel: Channel) -> None:
        if channel.filler is None and channel.head is not None and not self.closed:
            channel.filler = asyncio.get_running_loop().create_task(self._fill(channel))

    async def _fill(self, channel: Channel) -> None:
        """Publish from the stash and the log until the channel reaches its known head."""
        try:
            while self._channels.get(channel.namespace) is channel and not self.closed:
                assert channel.head is not None
                stash = channel.stash
                while stash and stash[0].sequence <= channel.head:
                    stash.popleft()
                if stash and stash[0].sequence == channel.head + 1:
                    run = [stash.popleft()]
                    while stash and stash[0].sequence == run[-1].sequence + 1:
                        run.append(stash.popleft())
                    self._publish(channel, run)
                    continue
                if channel.head >= channel.known:
                    return
                after = channel.head
                up_to = min(channel.known, after + FILL_CHUNK)
                if stash:
                    up_to = min(up_to, stash[0].sequence - 1)
                records = await self.db.read(
                    functools.partial(
                        event_log.read_range, namespace=channel.namespace, after=after, up_to=up_to
                    )
                )
                fresh = [r for r in records if r.sequence > channel.head]
                if fresh:
                    self._publish(channel, fresh)
                channel.head = max(channel.head, up_to)  # archived events leave holes
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "event fan-out for namespace %s failed; retrying on the next head",
                channel.namespace,
            )
            await asyncio.sleep(0.5)
        finally:
            if channel.filler is asyncio.current_task():
                channel.filler = None

    async def _init_channel(self, channel: Channel) -> None:
        try:
            head = await self.db.read(lambda conn: event_log.head(conn, channel.namespace))
        except Exception as error:
            if self._channels.get(channel.namespace) is channel:
                del self._channels[channel.namespace]
            self.count -= len(channel.subscribers)
            metrics.SUBSCRIBERS.dec(len(channel.subscribers))
            channel.subscribers.clear()
            channel.ready.set_exception(error)
            return
        channel.head = head
        channel.known = max(channel.known, head)
        channel.ready.set_result(None)
        if channel.stash or channel.known > head:
            self._ensure_filler(channel)

    def _check_all_heads(self) -> None:
        """After a (re)connect of the listener, notifications may have been missed."""
        if self._channels:
            self._spawn(self._read_heads(list(self._channels)))

    async def _read_heads(self, names: list[str]) -> None:
        try:
            heads = await self.db.read(functools.partial(event_log.heads, namespaces=names))
        except Exception:
            log.warning("could not read event heads", exc_info=True)
            return
        for namespace, head in heads.items():
            self.saw_head(namespace, head)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
