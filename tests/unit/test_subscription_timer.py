"""The keepalive timer of a SubscribeEvents stream, driven by hand (no waiting on clocks)."""

from __future__ import annotations

import asyncio

from stateward.server.services.execution import _IdleTimer


async def test_a_stream_that_delivered_within_the_interval_is_not_idle() -> None:
    wakeup = asyncio.Event()
    timer = _IdleTimer(wakeup, 30.0)
    try:
        timer.last = timer.clock() - 29.0  # delivered 29 s ago
        timer._check()
        assert not timer.due and not wakeup.is_set()
    finally:
        timer.cancel()


async def test_a_quiet_interval_wakes_the_stream_once_per_interval() -> None:
    wakeup = asyncio.Event()
    timer = _IdleTimer(wakeup, 30.0)
    try:
        timer.last = timer.clock() - 31.0
        timer._check()
        assert timer.due and wakeup.is_set()
        # The keepalive counts as a delivery: the next one is a whole interval away.
        timer.due = False
        wakeup.clear()
        timer._check()
        assert not timer.due and not wakeup.is_set()
    finally:
        timer.cancel()
