"""Subscriptions across faults: behind a proxy that delays bytes and cuts connections
at random, ``Client.subscribe`` delivers every event exactly once, in order."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from stateward.client import Backoff, Client, Event, NewEvent
from tests.faults.proxy import FaultProxy
from tests.faults.workload import counts, report
from tests.support.server import ServerThread

CHANNEL = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


@pytest.fixture
def direct(server: ServerThread) -> Iterator[Client]:
    with Client.connect(server.target, timeout=60) as client:
        yield client


def test_subscribe_gets_every_event_once_in_order(server: ServerThread, direct: Client) -> None:
    batches, min_cuts = counts(40, 200), counts(5, 30)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    agent_id = f"s-{uuid.uuid4().hex[:10]}"
    direct.create_agent(agent_id, "sub")
    run = direct.start_workflow_run("wf", agent_id=agent_id)
    received: list[Event] = []
    done = threading.Event()

    with (
        FaultProxy(server.port, seed=seed) as proxy,
        Client.connect(proxy.target, timeout=60, channel_options=CHANNEL) as subscriber,
    ):
        proxy.chaos(max_delay=0.02, lifetime=(0.1, 0.6))

        def follow() -> None:
            stream = subscriber.subscribe(
                run_id=run.run_id,
                keepalive_interval=1.0,
                reconnect=Backoff(initial=0.02, maximum=0.5),
            )
            for event in stream:
                received.append(event)
                if event.data.get("last"):
                    break
            done.set()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        written: list[tuple[int, dict[str, int]]] = []
        b = 0
        deadline = time.monotonic() + 300  # a loaded machine cuts less often per batch
        while True:
            b += 1
            last = b >= batches and (proxy.cuts >= min_cuts or time.monotonic() > deadline)
            datas = [{"b": b, "i": i} for i in range(rng.randint(1, 10))]
            if last:
                datas[-1]["last"] = 1
            result = direct.append_events([NewEvent("step", d, run_id=run.run_id) for d in datas])
            written += list(
                zip(range(result.first_sequence, result.last_sequence + 1), datas, strict=True)
            )
            if last:
                break
            time.sleep(rng.uniform(0, 0.05))
        assert done.wait(300), f"subscriber stalled after {len(received)} of {len(written)} events"
        proxy.calm()
        thread.join(30)

    expected = [(e.sequence, e.type, e.data) for e in direct.iter_events(run_id=run.run_id)]
    got = [(e.sequence, e.type, e.data) for e in received]
    assert got == expected  # every event of the run (run.started included), once, in order
    assert [s for s, _ in written] == [s for s, t, _ in got if t == "step"]
    assert proxy.cuts >= min_cuts, f"only {proxy.cuts} connections were cut"
    report(
        f"[faults] subscribe: seed={seed} events={len(got)} faults_injected={proxy.cuts} "
        f"connections={proxy.connections} duplicates=0 lost=0"
    )
