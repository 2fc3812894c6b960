"""The Prometheus endpoint: every metric family is exposed, and traffic moves the counters.

The registry is global to the process (as in production, one server per process), so
assertions compare scrapes taken before and after the traffic.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stateward.client import Client, NewEvent
from stateward.client.errors import NotFound, StatewardError
from stateward.server import metrics
from stateward.server.config import ConfigError, Settings
from stateward.storage.blobs import blob_key
from stateward.v1 import lifecycle_pb2 as pb
from stateward.v1 import lifecycle_pb2_grpc
from tests.support.server import ServerThread

LIFECYCLE = "stateward.v1.LifecycleService"
FAMILIES = {
    "stateward_rpc_handled": "counter",
    "stateward_rpc_duration_seconds": "histogram",
    "stateward_rpc_in_flight": "gauge",
    "stateward_db_duration_seconds": "histogram",
    "stateward_event_head_sequence": "gauge",
    "stateward_subscribers": "gauge",
    "stateward_subscriber_lag_events": "histogram",
    "stateward_subscriber_catchups": "counter",
    "stateward_checkpoint_bytes": "counter",
    "stateward_cache_requests": "counter",
    "stateward_cache_hit_ratio": "gauge",
    "stateward_sweeper_actions": "counter",
    "stateward_retention_actions": "counter",
    "process_cpu_seconds": "counter",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def observed(settings: Settings) -> Iterator[ServerThread]:
    server = ServerThread(replace(settings, metrics_listen="127.0.0.1:0"))
    yield server.start()
    server.close()


def scrape(server: ServerThread) -> tuple[dict[str, str], Samples]:
    assert server.server is not None and server.server.metrics_server is not None
    url = f"http://127.0.0.1:{server.server.metrics_server.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    families, samples = {}, {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_endpoint_exposes_every_family_after_traffic(observed: ServerThread) -> None:
    _, before = scrape(observed)
    with grpc.insecure_channel(observed.target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        stub.CreateAgent(pb.CreateAgentRequest(agent_id="m-1", type="t", config_json=b"{}"))
        stub.GetAgent(pb.GetAgentRequest(agent_id="m-1"))
        with pytest.raises(grpc.RpcError):
            stub.GetAgent(pb.GetAgentRequest(agent_id="absent"))
        stub.ListAgents(pb.ListAgentsRequest())
    families, after = scrape(observed)

    for name, kind in FAMILIES.items():
        assert families.get(name) == kind, name

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    rpc = {"service": LIFECYCLE}
    assert delta("stateward_rpc_handled_total", **rpc, method="CreateAgent", code="OK") == 1
    assert delta("stateward_rpc_handled_total", **rpc, method="GetAgent", code="OK") == 1
    assert delta("stateward_rpc_handled_total", **rpc, method="GetAgent", code="NOT_FOUND") == 1
    assert (
        delta("stateward_rpc_duration_seconds_count", **rpc, method="GetAgent", code="NOT_FOUND")
        == 1
    )
    assert (
        delta(
            "stateward_rpc_duration_seconds_bucket",
            **rpc,
            method="ListAgents",
            code="OK",
            le="+Inf",
        )
        == 1
    )
    assert value(after, "stateward_rpc_in_flight", **rpc, method="GetAgent") == 0
    for kind in ("read", "write", "commit"):
        assert delta("stateward_db_duration_seconds_count", kind=kind) >= 1, kind
    assert value(after, "stateward_event_head_sequence", namespace="default") >= 1
    for direction in ("in", "out"):
        assert ("stateward_checkpoint_bytes_total", frozenset({("direction", direction)})) in after


def test_metrics_are_off_unless_asked_for(server: ServerThread) -> None:
    assert server.server is not None and server.server.metrics_server is None


def test_a_malformed_metrics_address_stops_the_server(settings: Settings) -> None:
    server = ServerThread(replace(settings, metrics_listen="9464"))
    try:
        with pytest.raises(ConfigError, match="metrics_listen: expected host:port"):
            server.start()
    finally:
        server.close()


@pytest.fixture
def busy(settings: Settings) -> Iterator[ServerThread]:
    """Metrics on, a tiny subscriber buffer (to overflow it) and a fast lease sweeper."""
    server = ServerThread(
        replace(settings, metrics_listen="127.0.0.1:0", subscriber_buffer=4, sweep_interval=0.1)
    )
    yield server.start()
    server.close()


def poll(check: Callable[[], bool], what: str, deadline: float = 20.0) -> None:
    give_up = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_traffic_in_every_area_moves_its_family(busy: ServerThread) -> None:
    """Subscriptions, cache, checkpoints, sweeper, retention and the event head."""
    _, before = scrape(busy)

    def delta(name: str, **labels: str) -> float:
        return value(scrape(busy)[1], name, **labels) - value(before, name, **labels)

    client = Client.connect(busy.target, namespace="metrics", timeout=10)
    received: list[Any] = []
    stream = client.subscribe_events()

    def read() -> None:
        with contextlib.suppress(StatewardError):  # the client closes under the stream
            received.extend(stream)

    reader = threading.Thread(target=read, daemon=True)
    try:
        client.create_agent("m-agent", "planner")
        client.initialize_agent("m-agent")
        reader.start()
        # Subscriptions: open now; a live delivery records lag; a burst larger than the
        # buffer of 4 overflows it, sending the stream back to the log (a catch-up).
        poll(lambda: value(scrape(busy)[1], "stateward_subscribers") >= 1, "the subscriber")
        run = client.start_workflow_run("wf", agent_id="m-agent")

        def live_delivery() -> bool:
            client.append_events([NewEvent("tick", run_id=run.run_id)])
            return delta("stateward_subscriber_lag_events_count") >= 1

        poll(live_delivery, "a live delivery")
        client.append_events([NewEvent("burst", run_id=run.run_id) for _ in range(10)])
        poll(lambda: delta("stateward_subscriber_catchups_total") >= 1, "a catch-up")
        poll(lambda: sum(1 for e in received if e.type == "burst") == 10, "the burst, re-read")

        # Cache: a saved state is cached (a hit); an agent without one is a miss.
        client.save_state("m-agent", {"step": 1})
        client.get_state("m-agent")
        with pytest.raises(NotFound):
            client.get_state("m-absent")

        # Checkpoints: bytes in on create, out on download.
        payload = b"x" * 5000
        first = client.create_checkpoint("m-agent", payload)
        client.create_checkpoint("m-agent", b"y" * 10)
        assert client.download_checkpoint(first.checkpoint_id) == payload

        # Sweeper: a task whose lease runs out at once is marked TIMED_OUT.
        client.start_task_run(run.run_id, "t1", "m-agent", task_timeout=0.05)
        poll(
            lambda: delta("stateward_sweeper_actions_total", action="task_timed_out") >= 1,
            "the sweeper",
        )

        # Retention: prune, archive a finished run, collect an orphan blob.
        assert len(client.prune_checkpoints(keep_last=1).deleted) == 1
        client.complete_workflow_run(run.run_id)
        archived = client.archive_runs(datetime.now(UTC) + timedelta(milliseconds=1))
        assert archived.runs == 1
        assert busy.server is not None and busy.server.deps is not None
        blobs = busy.server.deps.extras["blob_store"]
        blobs.put(blob_key("metrics", "m-agent", "orphan-1"), b"no manifest")
        collected = client.collect_garbage(grace_period=0).deleted_blobs
        assert "metrics/m-agent/orphan-1" in collected
        head = received[-1].sequence if received else 0
    finally:
        client.close()
        reader.join(timeout=10)
    poll(
        lambda: (
            value(scrape(busy)[1], "stateward_subscribers")
            == value(before, "stateward_subscribers")
        ),
        "the subscriber to leave",
    )

    families, after = scrape(busy)
    for name, kind in FAMILIES.items():
        assert families.get(name) == kind, name

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("stateward_subscriber_lag_events_count") >= 1
    assert moved("stateward_subscriber_catchups_total") >= 1
    assert moved("stateward_cache_requests_total", cache="state", result="hit") >= 1
    assert moved("stateward_cache_requests_total", cache="state", result="miss") >= 1
    assert 0 < value(after, "stateward_cache_hit_ratio", cache="state") < 1
    assert moved("stateward_checkpoint_bytes_total", direction="in") == 5010
    assert moved("stateward_checkpoint_bytes_total", direction="out") == 5000
    assert moved("stateward_sweeper_actions_total", action="task_timed_out") >= 1
    for action in ("checkpoint_pruned", "run_archived", "blob_collected"):
        assert moved("stateward_retention_actions_total", action=action) >= 1, action
    assert value(after, "stateward_event_head_sequence", namespace="metrics") >= head > 0


def test_the_event_head_is_read_at_start_up(observed: ServerThread) -> None:
    with grpc.insecure_channel(observed.target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        stub.CreateAgent(
            pb.CreateAgentRequest(agent_id="h-1", type="t"),
            metadata=[("x-stateward-namespace", "heads")],
        )
    _, samples = scrape(observed)
    head = value(samples, "stateward_event_head_sequence", namespace="heads")
    assert head >= 1
    metrics.EVENT_HEAD.labels(namespace="heads").set(0)  # forget it, as a new process would
    observed.restart()
    _, samples = scrape(observed)
    assert value(samples, "stateward_event_head_sequence", namespace="heads") == head
