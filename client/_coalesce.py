"""Coalescing: the calls of many threads (or tasks) sent together as one batch call.

A caller that finds no batch in flight sends one, holding its own request and every
request queued meanwhile; callers that arrive while a batch is in flight queue theirs.
With one caller nothing waits (each request goes alone, as a unary call would); with
many, batches grow with the calls in flight, as a database's group commit does. A batch
holds at most ``max_batch`` requests and ``max_weight`` of their ``weight`` (its first
request goes whatever it weighs).

``send(requests)`` makes the batch call and returns one outcome per request, in order:
the result, or the exception to raise for that request. A batch that fails as a whole
fails each of its requests, each caller with its own copy of the exception.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeAlias, TypeVar, Union

Req = TypeVar("Req")
Res = TypeVar("Res")
Item = TypeVar("Item")

Outcome: TypeAlias = Union[Res, BaseException]  # noqa: UP007 (a generic alias)


def _answer(outcome: Outcome[Res]) -> Res:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _each_own(error: Exception, count: int) -> list[Exception]:
    """``error`` for the first caller, a copy for each other one: an exception raised in
    several threads would gather all their tracebacks."""
    copies: list[Exception] = [error]
    for _ in range(count - 1):
        try:
            copies.append(copy.copy(error))
        except Exception:  # an exception that cannot be copied: share it
            copies.append(error)
    return copies


def _take(
    waiting: deque[Item],
    first: list[Item],
    max_batch: int,
    weight: Callable[[Req], int] | None,
    max_weight: int,
    weight_of: Callable[[Item], Req],
) -> list[Item]:
    """``first`` plus the oldest of ``waiting`` while the batch's limits allow."""
    batch = first
    total = sum(weight(weight_of(item)) for item in batch) if weight else 0
    while waiting and len(batch) < max_batch:
        if weight is not None:
            total += weight(weight_of(waiting[0]))
            if total > max_weight:
                break
        batch.append(waiting.popleft())
    return batch


class _Slot(Generic[Req, Res]):
    """One blocked caller: its request and, once answered, its outcome or a turn to send."""

    __slots__ = ("request", "outcome", "leads", "resend", "ready")

    def __init__(self, request: Req) -> None:
        self.request = request
        self.outcome: Outcome[Res] = RuntimeError("the batch call ended without an answer")
        self.leads = False  # this caller sends the next batch
        self.resend = False  # its batch was never answered: call again
        self.ready = threading.Event()


def _request_of(slot: _Slot[Req, Res]) -> Req:
    return slot.request


class Coalescer(Generic[Req, Res]):
    """Blocking callers on many threads; whichever caller sends a batch also answers it.

    No thread of its own: the caller that sent a batch hands the next one to the oldest
    waiting caller, so every caller sends at most one batch beyond its own wait. A caller
    interrupted while it waits (Ctrl-C) leaves the queue, or passes its turn on; one
    interrupted while it sends has the others of its batch call again.
    """

    def __init__(
        self,
        send: Callable[[list[Req]], Sequence[Outcome[Res]]],
        max_batch: int,
        *,
        weight: Callable[[Req], int] | None = None,
        max_weight: int = 0,
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._weight = weight
        self._max_weight = max_weight
        self._lock = threading.Lock()
        self._waiting: deque[_Slot[Req, Res]] = deque()
        self._sending = False

    def call(self, request: Req) -> Res:
        while True:
            slot: _Slot[Req, Res] = _Slot(request)
            with self._lock:
                queued = self._sending
                if queued:
                    self._waiting.append(slot)
                else:
                    self._sending = True
            if queued:
                self._wait(slot)
                if slot.resend:
                    continue
                if not slot.leads:
                    return _answer(slot.outcome)
            self._send_batch(slot)
            return _answer(slot.outcome)

    def _wait(self, slot: _Slot[Req, Res]) -> None:
        try:
            slot.ready.wait()
        except BaseException:
            with self._lock:
                if slot in self._waiting:  # never sent: nothing else refers to it
                    self._waiting.remove(slot)
                    handed = False
                else:  # sent in a batch (its outcome goes nowhere), or handed the turn
                    handed = slot.leads
            if handed:
                self._hand_over()
            raise

    def _send_batch(self, own: _Slot[Req, Res]) -> None:
        with self._lock:
            batch = _take(
                self._waiting, [own], self._max_batch, self._weight, self._max_weight, _request_of
            )
        try:
            try:
                outcomes: Sequence[Outcome[Res]] = self._send([s.request for s in batch])
            except Exception as error:  # the batch failed as a whole: so did each request
                outcomes = _each_own(error, len(batch))
            for slot, outcome in zip(batch, outcomes, strict=True):
                slot.outcome = outcome
                if slot is not own:
                    slot.ready.set()
        except BaseException:  # interrupted while sending: the others call again
            for slot in batch:
                if slot is not own and not slot.ready.is_set():
                    slot.resend = True
                    slot.ready.set()
            raise
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the turn to send to the oldest waiting caller, if any."""
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
        self,
        send: Callable[[list[Req]], Awaitable[Sequence[Outcome[Res]]]],
        max_batch: int,
        *,
        weight: Callable[[Req], int] | None = None,
        max_weight: int = 0,
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._weight = weight
        self._max_weight = max_weight
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
                while self._waiting and self._waiting[0][1].done():
                    self._waiting.popleft()  # a cancelled caller's request is not sent
                if not self._waiting:
                    break
                batch = _take(
                    self._waiting,
                    [self._waiting.popleft()],
                    self._max_batch,
                    self._weight,
                    self._max_weight,
                    _first,
                )
                batch = [(r, f) for r, f in batch if not f.done()]
                try:
                    outcomes: Sequence[Outcome[Res]] = await self._send([r for r, _ in batch])
                except Exception as error:
                    outcomes = _each_own(error, len(batch))
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                batch = []
        finally:
            self._sender = None
            # Anything left unanswered means this task itself was cancelled (the loop is
            # closing): its callers are cancelled with it.
            for _, future in [*batch, *self._waiting]:
                future.cancel()
            self._waiting.clear()


def _first(item: tuple[Req, asyncio.Future[Res]]) -> Req:
    return item[0]
