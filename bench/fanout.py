"""Fan-out: subscribers in spawned processes, one writer process, or the bare ceiling.

Stateward mode: every subscriber streams SubscribeEvents filtered to one run from a
known sequence (so none can miss an event however late its stream registers) and
records commit-to-delivery latency as receive wall time minus the event's
create_time (same machine, same clock). A writer appends single events at a fixed
rate (open loop), or (``rate=0``) batches of 100 as fast as the subscribers keep up:
it stays at most ``MAX_AHEAD`` events ahead of the slowest one, so the run measures
the deliveries/s the server sustains, not how far an unthrottled writer can outrun
them. Deliveries/s counts what arrived while the writer ran; afterwards every
subscriber drains to the last event, which checks that none was lost.
Bare mode: each subscriber opens ``/bench.Echo/Stream`` and counts 200-byte messages
(the server sends as fast as each client reads).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import time
from array import array
from typing import Any

import grpc
from google.protobuf import duration_pb2

from bench import procstat
from bench.loadgen import CHANNEL_OPTIONS, percentile
from bench.scenarios import document
from stateward.v1 import execution_pb2, execution_pb2_grpc

# How far (in events) the max-rate writer may lead the slowest subscriber: 8 batches,
# below the server's default per-subscriber buffer (1,024 events).
MAX_AHEAD = 800
STALL_S = 30.0  # a subscriber that receives nothing for this long gives up (and the run fails)


def _now_us() -> int:
    return time.time_ns() // 1000


async def _subscribers(
    target: str,
    mode: str,
    count: int,
    run_id: str,
    after: int,
    duration: float,
    slot: int,
    progress: Any,
    last_seq: Any,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        await channel.channel_ready()
        latencies: array = array("d")
        arrivals: array = array("q")  # receive wall time (µs) of each event
        received = [0] * count
        lasts: list[int] = []
        if mode == "bare":
            method = channel.unary_stream("/bench.Echo/Stream")
            calls = [method(f"200,{duration}".encode()) for _ in range(count)]
            ready.put(1)
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            cpu0 = procstat.own_cpu_seconds()

            async def drain(i: int) -> None:
                async for _ in calls[i]:
                    received[i] += 1
                lasts.append(_now_us())

            await asyncio.gather(*(drain(i) for i in range(count)))
        else:
            stub = execution_pb2_grpc.ExecutionServiceStub(channel)
            request = execution_pb2.SubscribeEventsRequest(
                filter=execution_pb2.EventFilter(run_id=run_id),
                after_sequence=after,
                keepalive_interval=duration_pb2.Duration(seconds=1),
            )
            calls = [stub.SubscribeEvents(request) for _ in range(count)]
            for call in calls:  # the first keepalive proves the stream is registered
                while True:
                    item = await call.read()
                    if item is grpc.aio.EOF:
                        raise RuntimeError(
                            f"subscription ended before its first keepalive: {await call.code()}"
                        )
                    if item.HasField("keepalive"):
                        break
            ready.put(1)
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            cpu0 = procstat.own_cpu_seconds()
            seen_by = [after] * count

            async def report() -> None:  # the slowest stream here, for the max-rate writer
                while True:
                    progress[slot] = min(seen_by)
                    await asyncio.sleep(0.005)

            async def drain(i: int) -> None:
                call = calls[i]
                seen, last_at, heard = after, 0, time.monotonic()
                while time.monotonic() - heard < STALL_S:
                    if last_seq.value and seen >= last_seq.value:
                        break
                    # No wait_for here: cancelling a read cancels the RPC. Idle streams wake
                    # up on their 1 s keepalives to check whether the writer has finished.
                    item = await call.read()
                    if item is grpc.aio.EOF:
                        break
                    if item.HasField("event"):
                        last_at = _now_us()
                        event = item.event
                        latencies.append((last_at - event.create_time.ToMicroseconds()) / 1e3)
                        arrivals.append(last_at)
                        received[i] += 1
                        seen = seen_by[i] = event.sequence
                        heard = time.monotonic()
                lasts.append(last_at)
                call.cancel()

            reporter = asyncio.ensure_future(report())
            await asyncio.gather(*(drain(i) for i in range(count)))
            reporter.cancel()
        cpu = procstat.own_cpu_seconds() - cpu0
        results.put(
            (latencies.tobytes(), received, max(lasts) if lasts else 0, arrivals.tobytes(), cpu)
        )


def _subscriber_proc(*args: Any) -> None:
    results = args[-1]
    try:
        asyncio.run(_subscribers(*args))
    except BaseException as error:
        args[-3].put(1)
        results.put((b"", [], f"{type(error).__name__}: {error}", b"", 0.0))


async def _write(
    target: str, run_id: str, rate: float, duration: float, progress: Any
) -> tuple[int, int, int, int]:
    """Append for ``duration`` s: (events written, last sequence, start and end wall µs)."""
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        data = document(200, "fan")
        batch = 1 if rate else 100
        request = execution_pb2.AppendEventsRequest(
            events=[
                execution_pb2.NewEvent(type="bench.fan", data_json=data, run_id=run_id)
                for _ in range(batch)
            ]
        )
        written, last = 0, 0
        start = time.monotonic()
        started_us = _now_us()
        if rate:  # open loop: one call per tick, not waiting for the previous answer
            tasks = []
            while time.monotonic() - start < duration:
                tasks.append(asyncio.ensure_future(stub.AppendEvents(request)))
                written += batch
                delay = start + written / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            stopped_us = _now_us()
            last = max(reply.last_sequence for reply in await asyncio.gather(*tasks))
        else:  # as fast as the slowest subscriber keeps up (at most MAX_AHEAD events behind)
            while time.monotonic() - start < duration:
                if last and last - min(progress[:]) >= MAX_AHEAD:
                    await asyncio.sleep(0.001)
                    continue
                reply = await stub.AppendEvents(request)
                written += batch
                last = reply.last_sequence
            stopped_us = _now_us()
        return written, last, started_us, stopped_us


def run_fanout(
    target: str,
    *,
    mode: str,
    subscribers: int = 50,
    processes: int = 2,
    duration: float = 5.0,
    rate: float = 200.0,
    run_id: str = "",
    after: int = 0,
    server_pid: int | None = None,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    last_seq = ctx.Value("q", 0)
    per = [
        n
        for n in (
            subscribers // processes + (1 if i < subscribers % processes else 0)
            for i in range(processes)
        )
        if n
    ]
    progress = ctx.Array("q", [after] * len(per))
    procs = [
        ctx.Process(
            target=_subscriber_proc,
            daemon=True,
            args=(target, mode, n, run_id, after, duration, slot, progress, last_seq)
            + (ready, go, results),
        )
        for slot, n in enumerate(per)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)
    cpu0 = procstat.cpu_seconds(server_pid) if server_pid else 0.0
    go.set()
    written, started_us, stopped_us = 0, _now_us(), 0
    if mode != "bare":
        written, last, started_us, stopped_us = asyncio.run(
            _write(target, run_id, rate, duration, progress)
        )
        last_seq.value = last
    collected = [results.get(timeout=duration + STALL_S + 90) for _ in procs]
    server_cpu = procstat.cpu_seconds(server_pid) - cpu0 if server_pid else None
    for proc in procs:
        proc.join(10)
    errors = [c[2] for c in collected if isinstance(c[2], str)]
    if errors:
        raise RuntimeError(f"subscriber failed: {errors[0]}")
    latencies: array = array("d")
    arrivals: array = array("q")
    per_subscriber: list[int] = []
    for raw, received, _, raw_arrivals, _ in collected:
        part = array("d")
        part.frombytes(raw)
        latencies.extend(part)
        times = array("q")
        times.frombytes(raw_arrivals)
        arrivals.extend(times)
        per_subscriber.extend(received)
    end_us = max(c[2] for c in collected)
    total = sum(per_subscriber)
    client_cpu = sum(c[4] for c in collected)
    if mode == "bare":
        window, in_window = duration, total
    else:  # what arrived while the writer ran; the drain after it only checks completeness
        window = max((stopped_us - started_us) / 1e6, 1e-9)
        in_window = sum(1 for t in arrivals if t <= stopped_us)
    lat = sorted(latencies)
    return {
        "mode": mode,
        "subscribers": subscribers,
        "rate": rate,
        "max_ahead": MAX_AHEAD if mode != "bare" and not rate else None,
        "written": written,
        "delivered": total,
        "delivered_while_writing": in_window,
        "deliveries_per_s": in_window / window,
        "window_s": window,
        "drain_s": max(0.0, (end_us - stopped_us) / 1e6) if mode != "bare" else 0.0,
        "min_received": min(per_subscriber) if per_subscriber else 0,
        "every_subscriber_got_every_event": mode == "bare"
        or all(n == written for n in per_subscriber),
        "p50_ms": percentile(lat, 0.5) if lat else math.nan,
        "p99_ms": percentile(lat, 0.99) if lat else math.nan,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_delivery": server_cpu / total * 1e6 if server_cpu and total else None,
        "client_cpu_s": client_cpu,
        "client_cpu_us_per_delivery": client_cpu / total * 1e6 if total else None,
    }
