"""The Prometheus endpoint: every metric family is exposed, and traffic moves the counters.

The registry is global to the process (as in production, one server per process), so
assertions compare scrapes taken before and after the traffic.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stateward.server.config import ConfigError, Settings
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
