"""Closed-loop gRPC load generator: N spawned processes of grpc.aio clients.

A scenario is named ``"module:function"``; the function is an async factory
``factory(channel, slot, params) -> call`` run once per in-flight slot in the
worker process, returning an async ``call()`` that performs one request. Slots are
numbered 0..in_flight-1 across all processes, so a scenario can partition agents
by slot (no two slots touching the same agent means no compare-and-set conflicts).

Every result carries the client processes' CPU (os.times in each worker, over the
measured window) and, when a server pid is given, the server's CPU over the same
window (/proc/<pid>/stat), so no figure is quoted without its cost.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import multiprocessing as mp
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from bench import procstat

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]

Call = Callable[[], Awaitable[object]]


def resolve(name: str) -> Any:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class LoadResult:
    scenario: str
    in_flight: int
    processes: int
    duration_s: float
    calls: int
    errors: dict[str, int]
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    client_cpu_s: float
    server_cpu_s: float | None
    items_per_call: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        return self.calls_per_s * self.items_per_call

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["items_per_s"] = self.items_per_s
        per_call = 1e6 / max(self.calls, 1)
        out["client_cpu_us_per_call"] = self.client_cpu_s * per_call
        out["server_cpu_us_per_call"] = (
            None if self.server_cpu_s is None else self.server_cpu_s * per_call
        )
        return out


def percentile(sorted_values: list[float] | array, q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


async def _worker_async(
    target: str,
    scenario: str,
    params: dict[str, Any],
    slots: range,
    duration: float | None,
    calls_per_slot: int | None,
    ready: Any,
    go: Any,
) -> tuple[array, Counter[str], float, float]:
    factory = resolve(scenario)
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        await channel.channel_ready()
        call_fns = [await factory(channel, slot, params) for slot in slots]
        for fn in call_fns:  # one warm-up call per slot (connection, caches, first-call costs)
            try:
                await fn()
            except grpc.aio.AioRpcError:
                pass
        ready.put(1)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        latencies: array = array("d")
        errors: Counter[str] = Counter()
        started = time.perf_counter()
        cpu0 = procstat.own_cpu_seconds()
        deadline = started + duration if duration else math.inf

        async def loop(fn: Call) -> None:
            done = 0
            while time.perf_counter() < deadline and (
                calls_per_slot is None or done < calls_per_slot
            ):
                t0 = time.perf_counter()
                try:
                    await fn()
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] += 1
                latencies.append(time.perf_counter() - t0)
                done += 1

        await asyncio.gather(*(loop(fn) for fn in call_fns))
        elapsed = time.perf_counter() - started
        return latencies, errors, elapsed, procstat.own_cpu_seconds() - cpu0


def _worker(
    target: str,
    scenario: str,
    params: dict[str, Any],
    slots: range,
    duration: float | None,
    calls_per_slot: int | None,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    try:
        latencies, errors, elapsed, cpu = asyncio.run(
            _worker_async(target, scenario, params, slots, duration, calls_per_slot, ready, go)
        )
        results.put((latencies.tobytes(), dict(errors), elapsed, cpu, None))
    except BaseException as error:  # report, don't hang the parent
        ready.put(1)
        results.put((b"", {}, 0.0, 0.0, f"{type(error).__name__}: {error}"))


def run_load(
    target: str,
    scenario: str,
    *,
    in_flight: int,
    processes: int = 2,
    duration: float | None = 5.0,
    calls: int | None = None,
    params: dict[str, Any] | None = None,
    server_pid: int | None = None,
    items_per_call: int = 1,
    label: str | None = None,
) -> LoadResult:
    """Run ``scenario`` with ``in_flight`` concurrent calls spread over ``processes``."""
    processes = max(1, min(processes, in_flight))
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    per_process = [
        in_flight // processes + (1 if i < in_flight % processes else 0) for i in range(processes)
    ]
    calls_per_slot = math.ceil(calls / in_flight) if calls else None
    workers, offset = [], 0
    for count in per_process:
        slots = range(offset, offset + count)
        offset += count
        proc = ctx.Process(
            target=_worker,
            args=(
                target,
                scenario,
                params or {},
                slots,
                duration,
                calls_per_slot,
                ready,
                go,
                results,
            ),
            daemon=True,
        )
        proc.start()
        workers.append(proc)
    for _ in workers:
        ready.get(timeout=120)
    server_cpu0 = procstat.cpu_seconds(server_pid) if server_pid else None
    wall0 = time.perf_counter()
    go.set()
    collected = [results.get(timeout=(duration or 600) + 120) for _ in workers]
    wall = time.perf_counter() - wall0
    server_cpu = (
        procstat.cpu_seconds(server_pid) - server_cpu0
        if server_pid and server_cpu0 is not None
        else None
    )
    for proc in workers:
        proc.join(10)
    failures = [c[4] for c in collected if c[4]]
    if failures:
        raise RuntimeError(f"load worker failed: {failures[0]}")
    merged: array = array("d")
    errors: Counter[str] = Counter()
    for raw, errs, _elapsed, _cpu, _ in collected:
        part = array("d")
        part.frombytes(raw)
        merged.extend(part)
        errors.update(errs)
    elapsed = max(c[2] for c in collected) or wall
    lat = sorted(merged)
    return LoadResult(
        scenario=label or scenario,
        in_flight=in_flight,
        processes=processes,
        duration_s=elapsed,
        calls=len(lat),
        errors=dict(errors),
        calls_per_s=len(lat) / elapsed if elapsed else 0.0,
        p50_ms=percentile(lat, 0.50) * 1e3,
        p99_ms=percentile(lat, 0.99) * 1e3,
        p999_ms=percentile(lat, 0.999) * 1e3,
        client_cpu_s=sum(c[3] for c in collected),
        server_cpu_s=server_cpu,
        items_per_call=items_per_call,
    )
