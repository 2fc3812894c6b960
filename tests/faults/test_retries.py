"""Retries never duplicate: the proxy cuts the connection after the server committed a
mutation and before the client has its answer; the client's automatic retry (same
request_id) must return the original result, and nothing exists twice.

Runs on SQLite and PostgreSQL (the ``server`` fixture)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stateward.client import Client, NewEvent
from tests.faults.proxy import FaultProxy
from tests.faults.workload import report
from tests.support.server import ServerThread

CHANNEL = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


@pytest.fixture
def proxy(server: ServerThread) -> Iterator[FaultProxy]:
    with FaultProxy(server.port) as running:
        yield running


@pytest.fixture
def direct(server: ServerThread) -> Iterator[Client]:
    with Client.connect(server.target, timeout=60) as client:
        yield client


@pytest.fixture
def proxied(proxy: FaultProxy) -> Iterator[Client]:
    with Client.connect(proxy.target, timeout=60, channel_options=CHANNEL) as client:
        yield client


def _cut_once(proxy: FaultProxy, call: Callable[[], Any]) -> Any:
    """``call()`` with the connection cut right before its (committed) answer."""
    cuts = proxy.cuts
    proxy.cut_next_response()
    result = call()
    assert proxy.armed == 0 and proxy.cuts == cuts + 1, "the fault was not injected"
    return result


def _agent(direct: Client, *, active: bool = False) -> str:
    agent_id = f"r-{uuid.uuid4().hex[:10]}"
    direct.create_agent(agent_id, "retry")
    if active:
        direct.initialize_agent(agent_id)
        direct.activate_agent(agent_id)
    return agent_id


def test_retry_after_lost_answer_never_duplicates(
    proxy: FaultProxy, direct: Client, proxied: Client
) -> None:
    checked = []

    # CreateAgent: a fresh write would answer ALREADY_EXISTS; the replay answers OK.
    agent_id = f"r-{uuid.uuid4().hex[:10]}"
    label = {"batch": agent_id}
    created = _cut_once(proxy, lambda: proxied.create_agent(agent_id, "retry", labels=label))
    stored = direct.get_agent(agent_id)
    assert created.create_time == stored.create_time
    assert [a.agent_id for a in direct.iter_agents(labels=label)] == [agent_id]
    assert len(list(direct.iter_transitions(agent_id))) == 1
    checked.append("CreateAgent")

    # A transition: one audit record, one event.
    agent_id = _agent(direct)
    direct.initialize_agent(agent_id)
    moved = _cut_once(proxy, lambda: proxied.activate_agent(agent_id))
    assert str(moved.status).endswith("ACTIVE")
    trail = list(direct.iter_transitions(agent_id))
    assert [str(t.to_status).rsplit(".", 1)[-1] for t in trail] == [
        "CREATED",
        "INITIALIZED",
        "ACTIVE",
    ]
    assert len(list(direct.iter_events(agent_id=agent_id, types=["agent.transitioned"]))) == 2
    checked.append("ActivateAgent")

    # SaveState: one version.
    state = _cut_once(proxy, lambda: proxied.save_state(agent_id, {"n": 1}))
    assert state.version == 1
    assert [v.version for v in direct.iter_state_versions(agent_id)] == [1]
    assert direct.get_state(agent_id).document == {"n": 1}
    checked.append("SaveState")

    # StartWorkflowRun: one run.
    run = _cut_once(proxy, lambda: proxied.start_workflow_run("wf", agent_id=agent_id))
    assert [r.run_id for r in direct.iter_workflow_runs(agent_id=agent_id)] == [run.run_id]
    checked.append("StartWorkflowRun")

    # AppendEvents: one batch.
    batch = [NewEvent(type="step", data={"i": i}, run_id=run.run_id) for i in range(3)]
    appended = _cut_once(proxy, lambda: proxied.append_events(batch))
    events = list(direct.iter_events(run_id=run.run_id, types=["step"]))
    assert [e.sequence for e in events] == list(
        range(appended.first_sequence, appended.last_sequence + 1)
    )
    assert [e.data for e in events] == [{"i": 0}, {"i": 1}, {"i": 2}]
    checked.append("AppendEvents")

    # StartTaskRun: one task run.
    task = _cut_once(proxy, lambda: proxied.start_task_run(run.run_id, "t1", agent_id))
    assert [t.task_run_id for t in direct.iter_task_runs(run_id=run.run_id)] == [task.task_run_id]
    checked.append("StartTaskRun")

    # CreateCheckpoint: one checkpoint, one blob that verifies.
    checkpoint = _cut_once(proxy, lambda: proxied.create_checkpoint(agent_id, b"payload"))
    assert [c.checkpoint_id for c in direct.iter_checkpoints(agent_id)] == [
        checkpoint.checkpoint_id
    ]
    assert direct.download_checkpoint(checkpoint.checkpoint_id) == b"payload"
    checked.append("CreateCheckpoint")

    report(
        f"[faults] retries: rpc_kinds={len(checked)} faults_injected={proxy.cuts} "
        f"duplicates=0 lost=0 ({', '.join(checked)})"
    )


def test_the_cut_lands_after_the_commit(
    server: ServerThread, proxy: FaultProxy, direct: Client
) -> None:
    """Without retries the caller sees UNAVAILABLE, yet the write is there: the proxy
    really injects "committed, answer lost" (what the test above relies on)."""
    from stateward.client import RetryPolicy, Unavailable

    agent_id = f"r-{uuid.uuid4().hex[:10]}"
    with Client.connect(
        proxy.target, timeout=60, retry=RetryPolicy.disabled(), channel_options=CHANNEL
    ) as once:
        proxy.cut_next_response()
        with pytest.raises(Unavailable):
            once.create_agent(agent_id, "retry")
    assert direct.get_agent(agent_id).agent_id == agent_id


def test_checkpoint_survives_a_commit_with_a_lost_answer(
    server: ServerThread, direct: Client
) -> None:
    """The database commits the manifest but the server hears only a lost connection
    (PostgreSQL dying during COMMIT): the blob must stay, and the client's retry with
    the same request_id must get a checkpoint that downloads. Regression test for a
    blob deleted under a committed manifest (DATA_LOSS), found by the crash loop."""
    from stateward.storage.errors import StorageUnavailable

    assert server.server is not None and server.server.db is not None
    db = server.server.db
    real_write = db.write
    lost_once = []

    async def commit_then_lose_answer(fn):  # type: ignore[no-untyped-def]
        result = await real_write(fn)
        if not lost_once:
            lost_once.append(True)
            raise StorageUnavailable("connection lost during COMMIT (injected)")
        return result

    agent_id = _agent(direct)
    db.write = commit_then_lose_answer  # type: ignore[method-assign]
    try:
        checkpoint = direct.create_checkpoint(agent_id, b"kept")
    finally:
        db.write = real_write  # type: ignore[method-assign]
    assert lost_once, "the fault was not injected"
    assert [c.checkpoint_id for c in direct.iter_checkpoints(agent_id)] == [
        checkpoint.checkpoint_id
    ]
    assert direct.download_checkpoint(checkpoint.checkpoint_id) == b"kept"
