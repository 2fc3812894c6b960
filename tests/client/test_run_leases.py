"""Workflow-run leases through the client library, sync and async, against the real server."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from stateward.client import Client, FailedPrecondition, RunStatus
from tests.client.conftest import async_twin, wait_until


def test_a_leased_run_is_kept_alive_by_heartbeats(live: Client) -> None:
    run = live.start_workflow_run("ingest", heartbeat_timeout=timedelta(seconds=30))
    assert run.heartbeat_timeout == timedelta(seconds=30)
    assert run.lease_expire_time is not None and run.start_time is not None
    assert run.lease_expire_time - run.start_time == timedelta(seconds=30)
    renewed = live.heartbeat_workflow_run(run.run_id)
    assert renewed is not None and renewed >= run.lease_expire_time
    read = live.get_workflow_run(run.run_id)
    assert read.lease_expire_time == renewed and read.last_heartbeat_time is not None


def test_a_run_without_a_lease_heartbeats_to_no_expiry(live: Client) -> None:
    run = live.start_workflow_run("ingest")
    assert run.heartbeat_timeout is None and run.lease_expire_time is None
    assert live.heartbeat_workflow_run(run.run_id) is None


def test_an_abandoned_run_is_interrupted_and_its_heartbeat_refused(live: Client) -> None:
    run = live.start_workflow_run("ingest", heartbeat_timeout=0.2)  # seconds
    wait_until(
        lambda: live.get_workflow_run(run.run_id).status == RunStatus.INTERRUPTED,
        what="INTERRUPTED",
    )
    with pytest.raises(FailedPrecondition) as caught:
        live.heartbeat_workflow_run(run.run_id)
    assert caught.value.metadata["current_status"] == "INTERRUPTED"


def test_the_async_client_starts_and_beats_leased_runs(live: Client) -> None:
    async def go() -> None:
        async with async_twin(live) as client:
            run = await client.start_workflow_run("ingest", heartbeat_timeout=5.0)
            assert run.heartbeat_timeout == timedelta(seconds=5)
            lease = await client.heartbeat_workflow_run(run.run_id)
            assert lease is not None and run.lease_expire_time is not None
            assert lease >= run.lease_expire_time

    asyncio.run(go())
