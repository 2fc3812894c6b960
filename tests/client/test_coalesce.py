"""Coalescing concurrent callers into batch calls (client/_coalesce.py), blocking and asyncio.

Each test holds the first batch until the other callers have queued, so which requests
travel together is decided by the test, not by thread timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from stateward.client._coalesce import AsyncCoalescer, Coalescer, Outcome


class Refused(Exception):
    pass


def answer(requests: list[int]) -> list[Outcome[int]]:
    """Doubles each request; odd requests fail on their own."""
    return [Refused(r) if r % 2 else r * 2 for r in requests]


class Held:
    """A blocking ``send`` that records its batches and holds the first one until
    ``queued`` callers wait behind it."""

    def __init__(self, coalescer: Coalescer[int, int] | None, queued: int) -> None:
        self.coalescer = coalescer
        self.queued = queued
        self.batches: list[list[int]] = []

    def __call__(self, requests: list[int]) -> Sequence[Outcome[int]]:
        if not self.batches:
            assert self.coalescer is not None
            for _ in range(2000):
                with self.coalescer._lock:
                    if len(self.coalescer._waiting) >= self.queued:
                        break
                threading.Event().wait(0.005)
        self.batches.append(list(requests))
        return answer(requests)


def test_a_lone_caller_sends_its_request_alone() -> None:
    batches: list[list[int]] = []

    def send(requests: list[int]) -> list[Outcome[int]]:
        batches.append(requests)
        return answer(requests)

    coalescer = Coalescer(send, max_batch=8)
    assert [coalescer.call(n) for n in (2, 4)] == [4, 8]
    with pytest.raises(Refused):
        coalescer.call(3)
    assert batches == [[2], [4], [3]]


def test_callers_that_arrive_during_a_batch_go_together_and_get_their_own_outcomes() -> None:
    held = Held(None, queued=6)
    coalescer = Coalescer(held, max_batch=4)
    held.coalescer = coalescer

    def caller(n: int) -> int | str:
        try:
            return coalescer.call(n)
        except Refused as error:
            return f"refused {error.args[0]}"

    with ThreadPoolExecutor(7) as pool:
        first = pool.submit(caller, 0)
        while not coalescer._sending:
            threading.Event().wait(0.001)  # until the first caller is sending
        others = [pool.submit(caller, n) for n in range(1, 7)]
        outcomes = [first.result(10), *(f.result(10) for f in others)]
    assert outcomes == [0, "refused 1", 4, "refused 3", 8, "refused 5", 12]
    # One batch alone, then the six queued callers in arrival order, at most 4 at a time.
    assert held.batches[0] == [0]
    assert sorted(n for batch in held.batches[1:] for n in batch) == [1, 2, 3, 4, 5, 6]
    assert [len(b) for b in held.batches[1:]] == [4, 2]


def test_a_batch_that_fails_as_a_whole_fails_each_request_and_the_next_one_goes() -> None:
    calls = []

    def send(requests: list[int]) -> list[Outcome[int]]:
        calls.append(requests)
        if len(calls) == 1:
            raise Refused("the server is away")
        return answer(requests)

    coalescer = Coalescer(send, max_batch=8)
    with pytest.raises(Refused, match="the server is away"):
        coalescer.call(2)
    assert coalescer.call(2) == 4  # the failed sender handed the sending back


def test_many_threads_never_wait_forever() -> None:
    coalescer = Coalescer(answer, max_batch=3)

    def loop(start: int) -> int:
        return sum(coalescer.call(n) for n in range(start, start + 200, 2))

    with ThreadPoolExecutor(16) as pool:
        totals = list(pool.map(loop, [2 * i for i in range(16)]))
    assert totals == [sum(2 * n for n in range(2 * i, 2 * i + 200, 2)) for i in range(16)]


async def test_async_callers_coalesce_and_a_cancelled_caller_is_left_out() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def send(requests: list[int]) -> list[Outcome[int]]:
        batches.append(requests)
        if len(batches) == 1:
            await release.wait()
        return answer(requests)

    coalescer = AsyncCoalescer(send, max_batch=8)
    first = asyncio.ensure_future(coalescer.call(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the sender task took the first request
    queued = [asyncio.ensure_future(coalescer.call(n)) for n in (2, 3, 4)]
    cancelled = asyncio.ensure_future(coalescer.call(6))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    assert await first == 0
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    assert outcomes[0] == 4 and isinstance(outcomes[1], Refused) and outcomes[2] == 8
    assert batches == [[0], [2, 3, 4]]  # the cancelled caller's request was not sent
    assert await coalescer.call(8) == 16  # and the coalescer goes on


async def test_async_batch_failure_reaches_every_caller() -> None:
    async def send(requests: list[int]) -> list[Outcome[int]]:
        raise Refused("down")

    coalescer = AsyncCoalescer(send, max_batch=8)
    outcomes = await asyncio.gather(*(coalescer.call(n) for n in range(3)), return_exceptions=True)
    assert [type(o) for o in outcomes] == [Refused] * 3
