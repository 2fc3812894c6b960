"""Coalescing: the calls of many threads (or tasks) sent together as one batch call.

A caller that finds no batch in flight sends one, holding its own request and every
request queued meanwhile; callers that arrive while a batch is in flight queue theirs.
With one caller nothing waits (each request goes alone, as a unary call would); with
many, batches grow with the calls in flight, as a database's group commit does. Each
request gets its own outcome: a batch that fails as a whole fails each of its requests.

``send(requests)`` makes the batch call and returns one outcome per request, in order:
the result, or the exception to raise for that request.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeAlias, TypeVar, Union

Req = TypeVar("Req")
Res = TypeVar("Res")

Outcome: TypeAlias = Union[Res, BaseException]  # noqa: UP007 (a generic alias)


def _answer(outcome: Outcome[Res]) -> Res:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class _Slot(Generic[Req, Res]):
    """One blocked caller: its request and, once answered, its outcome or a turn to send."""

    __slots__ = ("request", "outcome", "leads", "ready")

    def __init__(self, request: Req) -> None:
        self.request = request
        self.outcome: Outcome[Res] = RuntimeError("the batch call ended without an answer")
        self.leads = False
        self.ready = threading.Event()


class Coalescer(Generic[Req, Res]):
    """Blocking callers on many threads; whichever caller sends a batch also answers it.

    No thread of its own: the caller that sent a batch hands the next one to the oldest
    waiting caller, so every caller sends at most one batch beyond its own wait.
    """

    def __init__(self, send: Callable[[list[Req]], Sequence[Outcome[Res]]], max_batch: int) -> None:
        self._send = send
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: deque[_Slot[Req, Res]] = deque()
        self._sending = False

    def call(self, request: Req) -> Res:
        slot: _Slot[Req, Res] = _Slot(request)
        with self._lock:
            queued = self._sending
            if queued:
                self._waiting.append(slot)
            else:
                self._sending = True
        if queued:
            slot.ready.wait()
            if not slot.leads:
                return _answer(slot.outcome)
        self._send_batch(slot)
        return _answer(slot.outcome)

    def _send_batch(self, own: _Slot[Req, Res]) -> None:
        with self._lock:
            batch = [own]
            while self._waiting and len(batch) < self._max_batch:
                batch.append(self._waiting.popleft())
        try:
            try:
                outcomes: Sequence[Outcome[Res]] = self._send([s.request for s in batch])
            except Exception as error:  # the batch failed as a whole: so did each request
                outcomes = [error] * len(batch)
            for slot, outcome in zip(batch, outcomes, strict=True):
                slot.outcome = outcome
                if slot is not own:
                    slot.ready.set()
        finally:
            with self._lock:
                if self._waiting:
                    following = self._waiting.popleft()
                    following.leads = True
                    following.ready.set()
                else:
                    self._sending = False


class AsyncCoalescer(Generic[Req, Res]):
    """The same for asyncio callers of one event loop: one task sends the batches in turn,
    so a caller cancelled while waiting cancels only its own wait."""

    def __init__(
        self, send: Callable[[list[Req]], Awaitable[Sequence[Outcome[Res]]]], max_batch: int
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._waiting: deque[tuple[Req, asyncio.Future[Res]]] = deque()
        self._sender: asyncio.Task[None] | None = None

    async def call(self, request: Req) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_batches())
        return await future

    async def _send_batches(self) -> None:
        batch: list[tuple[Req, asyncio.Future[Res]]] = []
        try:
            while self._waiting:
                batch = []
                while self._waiting and len(batch) < self._max_batch:
                    request, future = self._waiting.popleft()
                    if not future.done():  # a cancelled caller's request is not sent
                        batch.append((request, future))
                if not batch:
                    continue
                try:
                    outcomes: Sequence[Outcome[Res]] = await self._send([r for r, _ in batch])
                except Exception as error:
                    outcomes = [error] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._sender = None
            # Anything left unanswered means this task itself was cancelled (the loop is
            # closing): its callers are cancelled with it.
            for _, future in [*batch, *self._waiting]:
                future.cancel()
            self._waiting.clear()
