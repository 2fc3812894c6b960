"""Dependency outages: PostgreSQL stopped under load, the S3 endpoint stopped.

While PostgreSQL is down, calls fail fast with UNAVAILABLE inside their deadline (none
hangs, none answers anything else), health reports NOT_SERVING; once it returns the
server recovers by itself and nothing acknowledged is lost. While S3 is down only
checkpoint RPCs answer UNAVAILABLE; they work again once it returns.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stateward.client import Client, RetryPolicy, StatewardError, Unavailable
from stateward.server.config import Settings
from stateward.server.services.checkpoints import INLINE_MAX
from tests.faults.workload import counts, report
from tests.support.postgres import PostgresCluster, PostgresUnavailable
from tests.support.server import ServerThread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CALL_DEADLINE = 5.0
"""Each call's deadline during the outage; a call that outlives it has hung."""


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.RpcError:
            return -1
        return reply.status


def _wait(predicate: object, timeout: float, what: str) -> float:
    """Poll ``predicate()`` until true; the seconds it took. Generous deadlines only."""
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


class Load:
    """Threads saving and listing state without retries; every outcome is recorded."""

    def __init__(self, target: str, agents: list[str]) -> None:
        self.client = Client.connect(target, timeout=CALL_DEADLINE, retry=RetryPolicy.disabled())
        self.agents = agents
        self.outcomes: Counter[str] = Counter()
        self.acked: dict[str, list[tuple[int, dict[str, int]]]] = {a: [] for a in agents}
        self.slowest = 0.0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(a,), daemon=True) for a in agents]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        self.client.close()

    def _loop(self, agent: str) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            doc = {"n": n}
            started = time.monotonic()
            try:
                if n % 3:
                    state = self.client.save_state(agent, doc)
                    self.acked[agent].append((state.version, doc))
                else:
                    self.client.list_state_versions(agent, page_size=5)
                outcome = "OK"
            except StatewardError as error:
                outcome = type(error).__name__
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.outcomes[outcome] += 1
            time.sleep(0.02)


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as error:
        pytest.skip(f"PostgreSQL unavailable: {error}")
    yield cluster
    cluster.destroy()


@pytest.mark.postgres
def test_postgres_outage_under_load(own_cluster: PostgresCluster, tmp_path: Path) -> None:
    outage = counts(3, 10)
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        database_url=own_cluster.create_database(),
        grace_period=0.5,
        log_level="ERROR",
        sweep_interval=0.25,
    )
    server = ServerThread(settings).start()
    try:
        with Client.connect(server.target, timeout=30) as client:
            agents = [f"o-{uuid.uuid4().hex[:8]}" for _ in range(4)]
            for agent in agents:
                client.create_agent(agent, "outage")
            with Load(server.target, agents) as load:
                _wait(lambda: load.outcomes["OK"] >= 20, 120, "writes before the outage")
                own_cluster.stop("immediate")
                not_serving = _wait(
                    lambda: _health(server.target) == health_pb2.HealthCheckResponse.NOT_SERVING,
                    60,
                    "health NOT_SERVING while PostgreSQL is down",
                )
                before = Counter(load.outcomes)
                time.sleep(outage)
                during = load.outcomes - before
                own_cluster.start()
                back = time.monotonic()
                _wait(
                    lambda: _health(server.target) == health_pb2.HealthCheckResponse.SERVING,
                    120,
                    "health SERVING again",
                )
                oks = load.outcomes["OK"]
                _wait(lambda: load.outcomes["OK"] > oks + 10, 120, "writes after the outage")
                recovered = time.monotonic() - back
            # Nothing acknowledged is lost; versions stay gap-free.
            for agent in agents:
                versions = {
                    v.version: v.document
                    for v in client.iter_state_versions(
                        agent, include_documents=True, page_size=1000
                    )
                }
                assert sorted(versions) == list(range(1, len(versions) + 1))
                for version, doc in load.acked[agent]:
                    assert versions[version] == doc
            sequences = [e.sequence for e in client.iter_events(page_size=1000)]
            assert sequences == list(range(1, len(sequences) + 1))
    finally:
        server.close()
    failures = {k: v for k, v in during.items() if k != "OK"}
    assert set(failures) <= {"Unavailable"}, f"calls failed with other errors: {during}"
    assert failures.get("Unavailable", 0) > 0, f"no call failed during the outage: {during}"
    assert load.slowest < CALL_DEADLINE + 5, f"a call took {load.slowest:.1f} s: it hung"
    report(
        f"[faults] postgres outage: outage_s={outage} calls_during={sum(during.values())} "
        f"unavailable={failures.get('Unavailable', 0)} not_serving_after_s={not_serving:.1f} "
        f"recovered_after_s={recovered:.1f} slowest_call_s={load.slowest:.1f} "
        f"acknowledged_writes_checked={sum(len(v) for v in load.acked.values())} lost=0"
    )


FAST_FAIL_S3 = {"config_kwargs": {"connect_timeout": 2, "retries": {"max_attempts": 1}}}
"""s3fs and botocore retry a refused connection for ~20 s by default, longer than many
callers' deadlines; without botocore's own retries an outage answers UNAVAILABLE sooner."""


# Payloads over the inline limit: small ones live in the database row and never reach S3.
BLOB_BEFORE, BLOB_DURING, BLOB_AFTER = (
    tag * (INLINE_MAX // len(tag) + 1) for tag in (b"before", b"during", b"after")
)


@pytest.mark.s3
def test_s3_outage_affects_only_checkpoints(tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    from tests.support import s3

    endpoint = s3.start_or_skip()
    bucket = endpoint.bucket()
    settings = Settings(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        grace_period=0.5,
        log_level="ERROR",
        blob_url=f"s3://{bucket}/cp",
        blob_options=json.dumps(FAST_FAIL_S3 | endpoint.storage_options),
    )
    server = ServerThread(settings).start()
    host, port = endpoint._server.get_host_and_port()
    outcomes: Counter[str] = Counter()
    slowest = 0.0
    try:
        with Client.connect(server.target, timeout=30, retry=RetryPolicy.disabled()) as client:
            agent = f"s3-{uuid.uuid4().hex[:8]}"
            client.create_agent(agent, "outage")
            client.save_state(agent, {"n": 0})
            before = client.create_checkpoint(agent, BLOB_BEFORE)
            endpoint._server.stop()  # the endpoint goes away; moto keeps its objects
            try:
                for call in (
                    lambda: client.create_checkpoint(agent, BLOB_DURING),
                    lambda: client.upload_checkpoint(agent, BLOB_DURING, timeout=30),
                    lambda: client.download_checkpoint(before.checkpoint_id),
                ):
                    started = time.monotonic()
                    with pytest.raises(Unavailable):
                        call()
                    outcomes["Unavailable"] += 1
                    slowest = max(slowest, time.monotonic() - started)
                # Everything that does not touch blobs is unaffected.
                client.save_state(agent, {"n": 1})
                client.get_agent(agent)
                assert [c.checkpoint_id for c in client.iter_checkpoints(agent)] == [
                    before.checkpoint_id
                ]
                assert client.get_checkpoint(before.checkpoint_id).sha256 == before.sha256
                assert client.get_state(agent).document == {"n": 1}
                outcomes["unaffected_ok"] += 4
            finally:
                endpoint._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
                endpoint._server.start()
            assert client.download_checkpoint(before.checkpoint_id) == BLOB_BEFORE
            after = client.create_checkpoint(agent, BLOB_AFTER)
            assert client.download_checkpoint(after.checkpoint_id) == BLOB_AFTER
            # No half-written checkpoint from the outage is visible.
            listed = [c.checkpoint_id for c in client.iter_checkpoints(agent)]
            assert sorted(listed) == sorted([before.checkpoint_id, after.checkpoint_id])
    finally:
        server.close()
    report(
        f"[faults] s3 outage: checkpoint_calls_unavailable={outcomes['Unavailable']} "
        f"slowest_s={slowest:.1f} other_calls_ok={outcomes['unaffected_ok']} lost=0"
    )
