"""Coalescing concurrent callers into batch calls (client/_coalesce.py), blocking and asyncio.

Each test holds the first batch until the other callers have queued, so which requests
travel together is decided by the test, not by thread timing.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Sequence
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


def queued(coalescer: Coalescer[int, int], count: int) -> None:
    """Wait until ``count`` callers wait behind the batch in flight."""
    for _ in range(2000):
        with coalescer._lock:
            if len(coalescer._waiting) >= count:
                return
        threading.Event().wait(0.005)
    raise AssertionError(f"{count} callers never queued")


def within(fn: Callable[[], int], seconds: float = 10) -> int | None:
    """``fn()`` in a daemon thread; None if it has not returned after ``seconds``."""
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    return done[0] if done else None


class Gate:
    """A blocking ``send`` whose first batch waits for ``open``; ``then`` serves the rest."""

    def __init__(self, then: Callable[[list[int]], Sequence[Outcome[int]]] = answer) -> None:
        self.open = threading.Event()
        self.sending = threading.Event()
        self.batches: list[list[int]] = []
        self.then = then

    def __call__(self, requests: list[int]) -> Sequence[Outcome[int]]:
        self.batches.append(list(requests))
        if len(self.batches) == 1:
            self.sending.set()
            assert self.open.wait(10)
            return answer(requests)
        return self.then(requests)


def test_batches_stop_at_their_weight_and_the_first_request_goes_whatever_it_weighs() -> None:
    gate = Gate()
    coalescer = Coalescer(gate, max_batch=8, weight=lambda n: n, max_weight=10)
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(coalescer.call, 12)  # heavier than a batch may be: goes anyway
        assert gate.sending.wait(10)
        rest = [pool.submit(coalescer.call, n) for n in (4, 6)]
        queued(coalescer, 2)
        rest.append(pool.submit(coalescer.call, 2))
        queued(coalescer, 3)
        gate.open.set()
        assert [first.result(10), *(f.result(10) for f in rest)] == [24, 8, 12, 4]
    assert gate.batches == [[12], [4, 6], [2]]


def test_a_sender_interrupted_mid_batch_has_the_others_of_its_batch_call_again() -> None:
    def interrupted_once(requests: list[int]) -> list[Outcome[int]]:
        if len(gate.batches) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the thread sending the second batch
        return answer(requests)

    gate = Gate(then=interrupted_once)
    coalescer = Coalescer(gate, max_batch=8)
    outcomes: dict[int, object] = {}

    def caller(n: int) -> None:
        try:
            outcomes[n] = coalescer.call(n)
        except BaseException as error:
            outcomes[n] = type(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in (0, 2, 4)]
    threads[0].start()
    assert gate.sending.wait(10)
    for t in threads[1:]:
        t.start()
    queued(coalescer, 2)
    gate.open.set()
    for t in threads:
        t.join(10)
    # 2 sent [2, 4] and was interrupted; 4 called again, alone.
    assert outcomes == {0: 0, 2: KeyboardInterrupt, 4: 8}
    assert gate.batches == [[0], [2, 4], [4]]
    assert within(lambda: coalescer.call(6)) == 12


def test_a_caller_interrupted_while_it_waits_leaves_the_queue() -> None:
    gate = Gate()
    coalescer = Coalescer(gate, max_batch=8)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(coalescer.call, 0)
        assert gate.sending.wait(10)

        def interrupt(*_: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        try:
            with pytest.raises(KeyboardInterrupt):
                coalescer.call(2)  # queued behind the first batch, then Ctrl-C
        finally:
            signal.signal(signal.SIGALRM, previous)
        gate.open.set()
        assert first.result(10) == 0
    assert gate.batches == [[0]]  # the interrupted request was never sent
    assert within(lambda: coalescer.call(4)) == 8  # and the next caller is not left waiting


def test_a_failed_batch_gives_each_caller_its_own_exception() -> None:
    def down(requests: list[int]) -> list[Outcome[int]]:
        raise Refused("down")

    gate = Gate(then=down)
    coalescer = Coalescer(gate, max_batch=8)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(coalescer.call, 0)
        assert gate.sending.wait(10)
        failing = [pool.submit(coalescer.call, n) for n in (2, 4, 6)]
        queued(coalescer, 3)
        gate.open.set()
        assert first.result(10) == 0
        errors = [f.exception(10) for f in failing]
    assert all(isinstance(e, Refused) and e.args == ("down",) for e in errors)
    assert len({id(e) for e in errors}) == 3


async def test_async_batches_stop_at_their_weight_and_failures_are_each_callers_own() -> None:
    batches: list[list[int]] = []

    async def send(requests: list[int]) -> list[Outcome[int]]:
        batches.append(requests)
        if 6 in requests:
            raise Refused("down")
        return answer(requests)

    coalescer = AsyncCoalescer(send, max_batch=8, weight=lambda n: n, max_weight=10)
    outcomes = await asyncio.gather(
        *(coalescer.call(n) for n in (12, 4, 6, 2)), return_exceptions=True
    )
    assert batches == [[12], [4, 6], [2]]
    assert outcomes[0] == 24 and outcomes[3] == 4
    assert isinstance(outcomes[1], Refused) and isinstance(outcomes[2], Refused)
    assert outcomes[1] is not outcomes[2]
