"""Page tokens from a hostile or careless client: every paged call answers INVALID_ARGUMENT
naming ``page_token``, never a server fault, and a token never leaves its namespace."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from stateward.v1 import (
    execution_pb2,
    execution_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    recovery_pb2,
    recovery_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)
from tests.support.server import ServerThread

E, L, R, S = execution_pb2, lifecycle_pb2, recovery_pb2, state_pb2


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.lifecycle = lifecycle_pb2_grpc.LifecycleServiceStub(channel)
        self.state = state_pb2_grpc.StateServiceStub(channel)
        self.execution = execution_pb2_grpc.ExecutionServiceStub(channel)
        self.recovery = recovery_pb2_grpc.RecoveryServiceStub(channel)


@pytest.fixture
def stubs(server: ServerThread) -> Iterator[Stubs]:
    with grpc.insecure_channel(server.target) as channel:
        yield Stubs(channel)


def within(namespace: str) -> tuple[tuple[str, str]]:
    return (("x-stateward-namespace", namespace),)


def token_of(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).decode().rstrip("=")


def opened(token: str) -> list[Any]:
    value: list[Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return value


# Every paged call, as a function of its page token.
PAGED: dict[str, Callable[[Stubs, str], Any]] = {
    "ListAgents": lambda s, t: s.lifecycle.ListAgents(L.ListAgentsRequest(page_token=t)),
    "ListTransitions": lambda s, t: s.lifecycle.ListTransitions(
        L.ListTransitionsRequest(agent_id="a-1", page_token=t)
    ),
    "ListStateVersions": lambda s, t: s.state.ListStateVersions(
        S.ListStateVersionsRequest(agent_id="a-1", page_token=t)
    ),
    "MigrateStates": lambda s, t: s.state.MigrateStates(
        S.MigrateStatesRequest(agent_type="worker", page_token=t)
    ),
    "ListWorkflowRuns": lambda s, t: s.execution.ListWorkflowRuns(
        E.ListWorkflowRunsRequest(page_token=t)
    ),
    "ListTaskRuns": lambda s, t: s.execution.ListTaskRuns(
        E.ListTaskRunsRequest(agent_id="a-1", page_token=t)
    ),
    "GetAgentHistory": lambda s, t: s.execution.GetAgentHistory(
        E.GetAgentHistoryRequest(agent_id="a-1", page_token=t)
    ),
    "ListEvents": lambda s, t: s.execution.ListEvents(E.ListEventsRequest(page_token=t)),
    "ListCheckpoints": lambda s, t: s.recovery.ListCheckpoints(
        R.ListCheckpointsRequest(page_token=t)
    ),
    "GetCompensationPlan": lambda s, t: s.recovery.GetCompensationPlan(
        R.GetCompensationPlanRequest(run_id="run-1", page_token=t)
    ),
}


def refused(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert "page_token" in (error.details() or "")
    return error


def test_a_token_nested_past_the_parsers_depth_is_refused_by_every_paged_call(
    stubs: Stubs,
) -> None:
    stubs.lifecycle.CreateAgent(L.CreateAgentRequest(agent_id="a-1", type="worker"))
    nested = token_of(b"[" * 1500)  # 2,000 characters: under the length limit
    for name, call in PAGED.items():
        refused(lambda call=call: call(stubs, nested))  # type: ignore[misc]
        assert name


@pytest.mark.parametrize("forged", ["\ud800", "a\x00b", "a b", ""])
def test_a_real_token_with_a_forged_id_cursor_is_refused(stubs: Stubs, forged: str) -> None:
    for agent in ("a-1", "a-2", "a-3"):
        stubs.lifecycle.CreateAgent(L.CreateAgentRequest(agent_id=agent, type="worker"))
        stubs.execution.StartWorkflowRun(E.StartWorkflowRunRequest(workflow_name="wf"))
        stubs.recovery.CreateCheckpoint(R.CreateCheckpointRequest(agent_id="a-1", payload=b"p"))
    firsts = {
        "ListAgents": stubs.lifecycle.ListAgents(L.ListAgentsRequest(page_size=1)),
        "ListWorkflowRuns": stubs.execution.ListWorkflowRuns(
            E.ListWorkflowRunsRequest(page_size=1)
        ),
        "ListCheckpoints": stubs.recovery.ListCheckpoints(R.ListCheckpointsRequest(page_size=1)),
    }
    for name, first in firsts.items():
        genuine = opened(first.next_page_token)
        assert isinstance(genuine[-1], str)  # the id the next page starts after
        token = token_of(json.dumps([*genuine[:-1], forged]).encode())
        refused(lambda name=name, token=token: PAGED[name](stubs, token))  # type: ignore[misc]


def test_a_bad_token_in_a_batch_fails_its_own_listing_only(stubs: Stubs) -> None:
    stubs.lifecycle.CreateAgent(L.CreateAgentRequest(agent_id="a-1", type="worker"))
    stubs.recovery.CreateCheckpoint(R.CreateCheckpointRequest(agent_id="a-1", payload=b"p"))
    good = R.ListCheckpointsRequest(agent_id="a-1")
    bad = R.ListCheckpointsRequest(agent_id="a-1", page_token=token_of(b"[" * 1500))
    answer = stubs.recovery.BatchListCheckpoints(
        R.BatchListCheckpointsRequest(requests=[good, bad, good])
    )
    kinds = [result.WhichOneof("result") for result in answer.results]
    assert kinds == ["response", "error", "response"]
    assert answer.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert len(answer.results[0].response.checkpoints) == 1


def test_a_token_is_refused_in_another_namespace(stubs: Stubs) -> None:
    for namespace, agents in (("team-a", ["m-1", "m-2", "m-3"]), ("team-b", ["b-1", "n-1"])):
        for agent in agents:
            stubs.lifecycle.CreateAgent(
                L.CreateAgentRequest(agent_id=agent, type="worker"), metadata=within(namespace)
            )
    request = L.ListAgentsRequest(page_size=2)
    token = stubs.lifecycle.ListAgents(request, metadata=within("team-a")).next_page_token
    assert token
    # Followed in team-b, the cursor (after "m-2") would silently skip b-1.
    again = L.ListAgentsRequest(page_size=2, page_token=token)
    refused(lambda: stubs.lifecycle.ListAgents(again, metadata=within("team-b")))
    page = stubs.lifecycle.ListAgents(again, metadata=within("team-a"))
    assert [a.agent_id for a in page.agents] == ["m-3"]
