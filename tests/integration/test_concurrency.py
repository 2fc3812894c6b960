"""Many clients racing lifecycle transitions, on both databases and across two replicas.

Whatever the interleaving, the audit trail must be a valid path through the state
machine, every accepted call must be exactly one audit record, and the stored
status must be where the trail ends.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from stateward.server.config import Settings
from stateward.v1 import lifecycle_pb2 as pb
from stateward.v1 import lifecycle_pb2_grpc
from tests.support.postgres import PostgresCluster
from tests.support.server import ServerThread

THREADS = 16
CALLS_PER_THREAD = 12

S = pb.AgentStatus
UNSPECIFIED, CREATED, INITIALIZED, ACTIVE, PAUSED, TERMINATED, ERROR = (
    S.Value(f"AGENT_STATUS_{n}")
    for n in ("UNSPECIFIED", "CREATED", "INITIALIZED", "ACTIVE", "PAUSED", "TERMINATED", "ERROR")
)
ALLOWED = {
    CREATED: {INITIALIZED, TERMINATED, ERROR},
    INITIALIZED: {ACTIVE, TERMINATED, ERROR},
    ACTIVE: {PAUSED, TERMINATED, ERROR},
    PAUSED: {ACTIVE, TERMINATED, ERROR},
    ERROR: {INITIALIZED, TERMINATED},
    TERMINATED: set(),
}
# Everything but terminate, so the race keeps going; terminate races last.
CYCLING = [
    "InitializeAgent",
    "ActivateAgent",
    "PauseAgent",
    "ResumeAgent",
    "ReportAgentError",
    "ResetAgent",
]


def request(method: str, agent_id: str) -> object:
    if method == "ReportAgentError":
        return pb.ReportAgentErrorRequest(agent_id=agent_id, message="raced")
    return getattr(pb, f"{method}Request")(agent_id=agent_id, reason=method)


@dataclass
class Outcome:
    accepted: list[pb.Transition] = field(default_factory=list)
    refused_from: list[str] = field(default_factory=list)  # current_status named by each refusal
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, call: object) -> None:
        try:
            reply = call()  # type: ignore[operator]
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                with self.lock:
                    self.unexpected.append(f"{method}: {error.code().name} {error.details()}")
                return
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            info = error_details_pb2.ErrorInfo()
            assert status is not None and status.details[0].Unpack(info)
            with self.lock:
                self.refused_from.append(info.metadata["current_status"])
            return
        with self.lock:
            self.accepted.append(reply.transition)  # type: ignore[attr-defined]


def terminate(stub: lifecycle_pb2_grpc.LifecycleServiceStub, agent_id: str) -> object:
    return stub.TerminateAgent(request("TerminateAgent", agent_id), timeout=30)


def race(targets: list[str], agent_ids: list[str], seed: int) -> Outcome:
    """THREADS clients, spread over ``targets``, firing random transitions, then terminate."""
    outcome = Outcome()
    start = threading.Barrier(THREADS)
    finale = threading.Barrier(THREADS)

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        with grpc.insecure_channel(targets[index % len(targets)]) as channel:
            stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
            start.wait(30)
            for _ in range(CALLS_PER_THREAD):
                method, agent_id = rng.choice(CYCLING), rng.choice(agent_ids)
                outcome.record(
                    method, lambda m=method, a=agent_id: getattr(stub, m)(request(m, a), timeout=30)
                )
            finale.wait(30)
            for agent_id in agent_ids:
                outcome.record("TerminateAgent", partial(terminate, stub, agent_id))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    return outcome


def full_trail(stub: lifecycle_pb2_grpc.LifecycleServiceStub, agent_id: str) -> list[pb.Transition]:
    records: list[pb.Transition] = []
    token = ""
    while True:
        reply = stub.ListTransitions(
            pb.ListTransitionsRequest(agent_id=agent_id, page_size=37, page_token=token), timeout=30
        )
        records.extend(reply.transitions)
        token = reply.next_page_token
        if not token:
            return records


def check_consistent(target: str, agent_ids: list[str], outcome: Outcome) -> None:
    assert outcome.unexpected == []
    with grpc.insecure_channel(target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        audited: list[pb.Transition] = []
        for agent_id in agent_ids:
            trail = full_trail(stub, agent_id)
            assert (trail[0].from_status, trail[0].to_status) == (UNSPECIFIED, CREATED)
            for before, after in zip(trail, trail[1:], strict=False):
                assert after.from_status == before.to_status, (before, after)
                assert after.to_status in ALLOWED[after.from_status], after
                assert after.event_sequence > before.event_sequence  # commit order
            agent = stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id), timeout=30).agent
            assert agent.status == trail[-1].to_status == TERMINATED
            assert sum(t.to_status == TERMINATED for t in trail) == 1
            audited.extend(trail[1:])
    # Every accepted call is exactly one audit record, and nothing else was audited.
    assert len(outcome.accepted) == len(audited)
    assert sorted(t.transition_id for t in outcome.accepted) == sorted(
        t.transition_id for t in audited
    )
    by_id = {t.transition_id: t for t in audited}
    for answer in outcome.accepted:
        assert answer == by_id[answer.transition_id]
    # Refusals named a status the agent really was in.
    visited = {S.Name(t.to_status).removeprefix("AGENT_STATUS_") for t in audited} | {"CREATED"}
    assert set(outcome.refused_from) <= visited
    # The race really raced: moves were accepted and refused, terminate won once per agent.
    assert len(outcome.accepted) > len(agent_ids)
    assert outcome.refused_from
    assert sum(t.to_status == TERMINATED for t in outcome.accepted) == len(agent_ids)


def create_agents(target: str, agent_ids: list[str]) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        for agent_id in agent_ids:
            stub.CreateAgent(pb.CreateAgentRequest(agent_id=agent_id, type="racer"), timeout=30)


def test_clients_racing_on_one_agent(server: ServerThread) -> None:
    create_agents(server.target, ["racer"])
    outcome = race([server.target], ["racer"], seed=1)
    check_consistent(server.target, ["racer"], outcome)


def test_clients_racing_on_several_agents(server: ServerThread) -> None:
    agents = [f"racer-{i}" for i in range(4)]
    create_agents(server.target, agents)
    outcome = race([server.target], agents, seed=2)
    check_consistent(server.target, agents, outcome)


def replay_race(targets: list[str]) -> None:
    """Every client sends the very same InitializeAgent: one transition, one shared answer."""
    create_agents(targets[0], ["racer"])
    answers: list[pb.InitializeAgentResponse] = []
    gate = threading.Barrier(THREADS)
    lock = threading.Lock()

    def client(index: int) -> None:
        with grpc.insecure_channel(targets[index % len(targets)]) as channel:
            stub = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
            gate.wait(30)
            answer = stub.InitializeAgent(
                pb.InitializeAgentRequest(agent_id="racer", request_id="init-once"), timeout=30
            )
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == THREADS
    assert all(answer == answers[0] for answer in answers)
    with grpc.insecure_channel(targets[-1]) as channel:
        trail = full_trail(lifecycle_pb2_grpc.LifecycleServiceStub(channel), "racer")
    assert [t.to_status for t in trail] == [CREATED, INITIALIZED]


def test_replays_racing_with_one_request_id_write_once(server: ServerThread) -> None:
    replay_race([server.target])


# -- two replicas on one PostgreSQL ------------------------------------------------------------


@pytest.fixture
def replicas(postgres: PostgresCluster, tmp_path: Path) -> Iterator[list[ServerThread]]:
    url = postgres.create_database()
    base = Settings(
        listen="127.0.0.1:0",
        data_dir=str(tmp_path / "data"),
        database_url=url,
        grace_period=0.5,
        log_level="WARNING",
    )
    servers = [
        ServerThread(replace(base, data_dir=str(tmp_path / f"data-{i}"))).start() for i in range(2)
    ]
    yield servers
    for server in servers:
        server.close()


@pytest.mark.postgres
def test_two_replicas_racing_on_one_agent(replicas: list[ServerThread]) -> None:
    targets = [r.target for r in replicas]
    create_agents(targets[0], ["racer"])
    outcome = race(targets, ["racer"], seed=3)
    for target in targets:  # both replicas tell the same story
        check_consistent(target, ["racer"], outcome)


@pytest.mark.postgres
def test_two_replicas_racing_on_several_agents(replicas: list[ServerThread]) -> None:
    targets = [r.target for r in replicas]
    agents = [f"racer-{i}" for i in range(4)]
    create_agents(targets[1], agents)
    outcome = race(targets, agents, seed=4)
    check_consistent(targets[0], agents, outcome)


@pytest.mark.postgres
def test_two_replicas_racing_one_request_id_write_once(replicas: list[ServerThread]) -> None:
    replay_race([r.target for r in replicas])
