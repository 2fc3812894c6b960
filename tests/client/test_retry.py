"""Retries on UNAVAILABLE: safe for mutations because every attempt carries one request_id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from stateward.client import RetryPolicy
from stateward.client._base import Schedule
from stateward.client.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from stateward.v1 import lifecycle_pb2
from tests.client.fakes import FakeServer, agent_pb, refuse


def flaky(failures: int, response: Any, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> Any:
    """A handler failing its first ``failures`` calls with ``code``, then answering."""
    seen = []

    def handler(request: Any) -> Any:
        seen.append(request)
        if len(seen) <= failures:
            raise refuse(code, f"attempt {len(seen)} failed")
        return response

    return handler


def test_mutation_is_retried_with_one_request_id(
    fake: FakeServer, call: Callable[..., Any]
) -> None:
    answer = lifecycle_pb2.PauseAgentResponse(
        agent=agent_pb(status=lifecycle_pb2.AGENT_STATUS_PAUSED)
    )
    fake.handlers["PauseAgent"] = flaky(2, answer)

    agent = call("pause_agent", "a1", reason="nap")

    assert agent.status == "PAUSED"
    requests = fake.requests("PauseAgent")
    assert len(requests) == 3
    ids = {r.request_id for r in requests}
    assert len(ids) == 1 and len(ids.pop()) == 32  # one generated uuid4 hex for all attempts
    assert {c.metadata["x-request-id"] for c in fake.calls} == {requests[0].request_id}


def test_caller_request_id_is_sent_verbatim(fake: FakeServer, call: Callable[..., Any]) -> None:
    answer = lifecycle_pb2.CreateAgentResponse(agent=agent_pb())
    fake.handlers["CreateAgent"] = flaky(1, answer)

    call("create_agent", "a1", "planner", request_id="mine-1")

    assert [r.request_id for r in fake.requests("CreateAgent")] == ["mine-1", "mine-1"]


def test_each_call_gets_its_own_request_id(fake: FakeServer, client: Any) -> None:
    fake.handlers["TerminateAgent"] = lambda r: lifecycle_pb2.TerminateAgentResponse(
        agent=agent_pb()
    )
    client.terminate_agent("a1")
    client.terminate_agent("a1")
    first, second = fake.requests("TerminateAgent")
    assert first.request_id != second.request_id


def test_reads_are_retried(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["GetAgent"] = flaky(3, lifecycle_pb2.GetAgentResponse(agent=agent_pb()))
    assert call("get_agent", "a1").agent_id == "a1"
    assert len(fake.requests("GetAgent")) == 4
    assert len({c.metadata["x-request-id"] for c in fake.calls}) == 1


def test_gives_up_after_max_attempts(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["ResumeAgent"] = flaky(99, None)
    with pytest.raises(Unavailable, match="attempt 4 failed") as caught:
        call("resume_agent", "a1", request_id="r-1")
    assert len(fake.requests("ResumeAgent")) == 4
    assert caught.value.request_id == "r-1"


def test_refusals_are_not_retried(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["ActivateAgent"] = flaky(99, None, grpc.StatusCode.FAILED_PRECONDITION)
    with pytest.raises(FailedPrecondition):
        call("activate_agent", "a1")
    assert len(fake.requests("ActivateAgent")) == 1


def test_retries_can_be_disabled(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["GetAgent"] = flaky(1, lifecycle_pb2.GetAgentResponse(agent=agent_pb()))
    with pytest.raises(Unavailable):
        call("get_agent", "a1", retry=RetryPolicy.disabled())
    assert len(fake.requests("GetAgent")) == 1


def test_timeout_bounds_all_attempts(fake: FakeServer, call: Callable[..., Any]) -> None:
    fake.handlers["GetAgent"] = flaky(10_000, None)
    patient = RetryPolicy(max_attempts=10_000, initial_backoff=0.02, max_backoff=0.02, jitter=0)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        call("get_agent", "a1", retry=patient, timeout=0.3)
    assert time.monotonic() - started < 2
    assert 2 <= len(fake.requests("GetAgent")) < 100


def test_per_call_timeout_is_a_deadline(fake: FakeServer, call: Callable[..., Any]) -> None:
    async def slow(request: Any) -> Any:
        await asyncio.sleep(2)
        return lifecycle_pb2.GetAgentResponse(agent=agent_pb())

    fake.handlers["GetAgent"] = slow
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        call("get_agent", "a1", timeout=0.2)
    assert time.monotonic() - started < 1.5
    assert len(fake.requests("GetAgent")) == 1  # a deadline is not retried


# -- the policy and the schedule, without a server -------------------------------------


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff=0.1, multiplier=2, max_backoff=0.5, jitter=0.5)
    assert [policy.backoff(n, rand=lambda: 0.0) for n in (1, 2, 3, 4)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.5]
    )
    # Jitter takes off up to half: never more than the ceiling, never less than half of it.
    assert policy.backoff(3, rand=lambda: 1.0) == pytest.approx(0.2)


def test_should_retry_only_listed_codes_within_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(grpc.StatusCode.UNAVAILABLE, 2)
    assert not policy.should_retry(grpc.StatusCode.UNAVAILABLE, 3)
    assert not policy.should_retry(grpc.StatusCode.DEADLINE_EXCEEDED, 1)
    assert not policy.should_retry(grpc.StatusCode.ABORTED, 1)


class Unreachable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


def test_schedule_never_waits_past_the_deadline() -> None:
    now = [100.0]
    schedule = Schedule(RetryPolicy(jitter=0, initial_backoff=1.0), 2.5, clock=lambda: now[0])
    assert schedule.next_timeout() == 2.5
    assert schedule.retry_delay(Unreachable()) == 1.0
    now[0] += 1.0
    assert schedule.next_timeout() == 1.5
    assert schedule.retry_delay(Unreachable()) is None  # 2 s more would end after the deadline


def test_schedule_without_timeout() -> None:
    schedule = Schedule(RetryPolicy(max_attempts=2, jitter=0), None)
    assert schedule.next_timeout() is None
    assert schedule.retry_delay(Unreachable()) == pytest.approx(0.1)
    schedule.next_timeout()
    assert schedule.retry_delay(Unreachable()) is None
