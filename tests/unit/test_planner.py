"""The recovery planner (server/domain/planner.py), case by case."""

from __future__ import annotations

import pytest

from stateward.server.domain.planner import (
    ErrorKind,
    Facts,
    Failure,
    Policy,
    Strategy,
    backoff_delay_us,
    effective_kind,
    plan,
)

S = 1_000_000
POLICY = Policy(
    timeout_factor=2.0, timeout_cap_us=100 * S, backoff_base_us=1 * S, backoff_cap_us=60 * S
)


def fixed(value: float):  # type: ignore[no-untyped-def]
    return lambda: value


def task_failure(kind: ErrorKind, message: str = "boom", **extra) -> Failure:  # type: ignore[no-untyped-def]
    return Failure(
        kind=int(kind),
        message=message,
        task_status=extra.pop("status", "FAILED"),
        task_run_id="tr_1",
        **extra,
    )


def facts(**extra) -> Facts:  # type: ignore[no-untyped-def]
    return Facts(agent_id="agent-1", agent_status=extra.pop("status", "ACTIVE"), **extra)


# (case, facts, expected strategy)
CASES = [
    ("healthy agent", facts(), Strategy.NONE),
    ("healthy agent with state", facts(state_version=3), Strategy.NONE),
    (
        "terminated agent, even with a failure",
        facts(status="TERMINATED", failure=task_failure(ErrorKind.TIMEOUT)),
        Strategy.NONE,
    ),
    (
        "timeout kind",
        facts(failure=task_failure(ErrorKind.TIMEOUT, timeout_us=10 * S)),
        Strategy.RETRY_WITH_LONGER_TIMEOUT,
    ),
    (
        "resource kind",
        facts(failure=task_failure(ErrorKind.RESOURCE_EXHAUSTED)),
        Strategy.RETRY_WITH_BACKOFF,
    ),
    (
        "dependency kind",
        facts(failure=task_failure(ErrorKind.DEPENDENCY)),
        Strategy.MANUAL_INTERVENTION,
    ),
    (
        "invalid input kind",
        facts(failure=task_failure(ErrorKind.INVALID_INPUT)),
        Strategy.MANUAL_INTERVENTION,
    ),
    (
        "internal kind",
        facts(failure=task_failure(ErrorKind.INTERNAL)),
        Strategy.MANUAL_INTERVENTION,
    ),
    (
        "structured kind beats the words in the message",
        facts(failure=task_failure(ErrorKind.INVALID_INPUT, "request timeout: rate limit")),
        Strategy.MANUAL_INTERVENTION,
    ),
    (
        "structured resource kind beats a timeout status",
        facts(failure=task_failure(ErrorKind.RESOURCE_EXHAUSTED, status="TIMED_OUT")),
        Strategy.RETRY_WITH_BACKOFF,
    ),
    (
        "unclassified, TIMED_OUT status",
        facts(failure=task_failure(ErrorKind.UNSPECIFIED, "lost", status="TIMED_OUT")),
        Strategy.RETRY_WITH_LONGER_TIMEOUT,
    ),
    (
        "unclassified, 'timeout' in the message",
        facts(failure=task_failure(ErrorKind.UNSPECIFIED, "upstream Timeout after 30s")),
        Strategy.RETRY_WITH_LONGER_TIMEOUT,
    ),
    (
        "unknown, 'timed out' in the message",
        facts(failure=task_failure(ErrorKind.UNKNOWN, "call timed out")),
        Strategy.RETRY_WITH_LONGER_TIMEOUT,
    ),
    (
        "unknown, 'deadline' in the message",
        facts(failure=task_failure(ErrorKind.UNKNOWN, "Deadline Exceeded")),
        Strategy.RETRY_WITH_LONGER_TIMEOUT,
    ),
    (
        "unclassified, 'rate limit' in the message",
        facts(failure=task_failure(ErrorKind.UNSPECIFIED, "hit the provider's rate limit")),
        Strategy.RETRY_WITH_BACKOFF,
    ),
    (
        "unknown, 'resource' in the message",
        facts(failure=task_failure(ErrorKind.UNKNOWN, "Resource temporarily unavailable")),
        Strategy.RETRY_WITH_BACKOFF,
    ),
    (
        "unknown, HTTP 429 in the message",
        facts(failure=task_failure(ErrorKind.UNKNOWN, "HTTP 429 from the model API")),
        Strategy.RETRY_WITH_BACKOFF,
    ),
    (
        "unknown, quota in the message",
        facts(failure=task_failure(ErrorKind.UNKNOWN, "monthly quota used up")),
        Strategy.RETRY_WITH_BACKOFF,
    ),
    (
        "unclassified with nothing recognisable",
        facts(failure=task_failure(ErrorKind.UNSPECIFIED, "KeyError: 'x'")),
        Strategy.MANUAL_INTERVENTION,
    ),
    (
        "kind number from a newer client",
        facts(failure=task_failure(99, "???")),  # type: ignore[arg-type]
        Strategy.MANUAL_INTERVENTION,
    ),
    (
        "interrupted task, unclassified",
        facts(
            failure=task_failure(ErrorKind.UNSPECIFIED, "server restarted", status="INTERRUPTED")
        ),
        Strategy.RETRY_WITH_BACKOFF,
    ),
    (
        "interrupted task, as the sweeper records it (kind TIMEOUT): no longer timeout",
        facts(failure=task_failure(ErrorKind.TIMEOUT, "lease expired", status="INTERRUPTED")),
        Strategy.RETRY_WITH_BACKOFF,
    ),
    (
        "timed-out task of kind TIMEOUT",
        facts(failure=task_failure(ErrorKind.TIMEOUT, "lease expired", status="TIMED_OUT")),
        Strategy.RETRY_WITH_LONGER_TIMEOUT,
    ),
    (
        "state unreadable, checkpoint exists",
        facts(
            state_version=4,
            state_readable=False,
            checkpoint_id="ckpt_1",
            checkpoint_state_version=3,
        ),
        Strategy.RESTORE_CHECKPOINT,
    ),
    (
        "state unreadable, checkpoint exists, beats a timeout failure",
        facts(
            state_version=4,
            state_readable=False,
            checkpoint_id="ckpt_1",
            failure=task_failure(ErrorKind.TIMEOUT),
        ),
        Strategy.RESTORE_CHECKPOINT,
    ),
    (
        "state unreadable, no checkpoint",
        facts(state_version=4, state_readable=False),
        Strategy.MANUAL_INTERVENTION,
    ),
    (
        "no state at all is not a missing state",
        facts(state_version=0, state_readable=False, checkpoint_id="ckpt_1"),
        Strategy.NONE,
    ),
    (
        "checkpoint exists, state fine: nothing to restore",
        facts(state_version=2, checkpoint_id="ckpt_1"),
        Strategy.NONE,
    ),
    (
        "agent ERROR with its own timeout error",
        facts(status="ERROR", failure=Failure(kind=int(ErrorKind.TIMEOUT), message="stuck")),
        Strategy.RETRY_WITH_LONGER_TIMEOUT,
    ),
    (
        "agent ERROR with an internal error",
        facts(status="ERROR", failure=Failure(kind=int(ErrorKind.INTERNAL), message="bug")),
        Strategy.MANUAL_INTERVENTION,
    ),
    (
        "agent ERROR without any recorded failure",
        facts(status="ERROR"),
        Strategy.MANUAL_INTERVENTION,
    ),
]


@pytest.mark.parametrize(("case", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_strategy_table(case: str, given: Facts, expected: Strategy) -> None:
    result = plan(given, POLICY, fixed(0.5))
    assert result.strategy is expected, result.explanation
    assert result.explanation
    if expected is Strategy.RESTORE_CHECKPOINT:
        assert result.checkpoint_id == given.checkpoint_id
        assert given.checkpoint_id and given.checkpoint_id in result.explanation
    else:
        assert result.checkpoint_id is None
    assert (result.suggested_timeout_us is not None) == (
        expected is Strategy.RETRY_WITH_LONGER_TIMEOUT
    )
    assert (result.retry_delay_us is not None) == (expected is Strategy.RETRY_WITH_BACKOFF)


def test_manual_intervention_carries_the_error() -> None:
    result = plan(
        facts(failure=task_failure(ErrorKind.DEPENDENCY, "tool 'search' returned 502")), POLICY
    )
    assert "tool 'search' returned 502" in result.explanation
    assert "tr_1" in result.explanation and "DEPENDENCY" in result.explanation


@pytest.mark.parametrize(
    ("timeout_us", "heartbeat_us", "expected_us"),
    [
        (10 * S, None, 20 * S),  # previous x factor
        (None, 7 * S, 14 * S),  # the heartbeat timeout when there is no overall one
        (10 * S, 3 * S, 20 * S),  # the overall timeout wins
        (60 * S, None, 100 * S),  # capped
        (500 * S, None, 100 * S),  # already above the cap: the cap
        (None, None, 100 * S),  # nothing to scale: the cap
        (1, None, 2),  # tiny values scale exactly
    ],
)
def test_longer_timeout(timeout_us: int | None, heartbeat_us: int | None, expected_us: int) -> None:
    failure = task_failure(
        ErrorKind.TIMEOUT, timeout_us=timeout_us, heartbeat_timeout_us=heartbeat_us
    )
    result = plan(facts(failure=failure), POLICY)
    assert result.suggested_timeout_us == expected_us


def test_timeout_factor_is_configurable() -> None:
    policy = Policy(timeout_factor=1.5, timeout_cap_us=1000 * S)
    failure = task_failure(ErrorKind.TIMEOUT, timeout_us=10 * S)
    assert plan(facts(failure=failure), policy).suggested_timeout_us == 15 * S


@pytest.mark.parametrize(
    ("attempt", "rand", "expected_us"),
    [
        (1, 0.0, S // 2),  # base 1 s, jitter floor is half
        (1, 0.999999, S - 1),  # ... and the ceiling just under the full delay
        (2, 0.0, S),  # 2 s
        (3, 0.5, 3 * S),  # 4 s at mid jitter
        (4, 0.0, 4 * S),  # 8 s
        (7, 0.0, 30 * S),  # 64 s capped to 60 s
        (7, 0.999999, 60 * S - 30),
        (10_000, 0.0, 30 * S),  # absurd attempt counts stay capped, no overflow
        (0, 0.0, S // 2),  # attempt 0 is treated as the first
    ],
)
def test_backoff_delay(attempt: int, rand: float, expected_us: int) -> None:
    assert backoff_delay_us(attempt, POLICY, fixed(rand)) == expected_us


def test_backoff_plan_uses_the_failing_attempt_and_injected_randomness() -> None:
    failure = task_failure(ErrorKind.RESOURCE_EXHAUSTED, attempt=3)
    low = plan(facts(failure=failure), POLICY, fixed(0.0))
    high = plan(facts(failure=failure), POLICY, fixed(0.99))
    assert low.retry_delay_us == 2 * S
    assert high.retry_delay_us is not None and 2 * S < high.retry_delay_us < 4 * S


def test_backoff_delays_grow_with_the_attempt() -> None:
    delays = [backoff_delay_us(n, POLICY, fixed(0.3)) for n in range(1, 10)]
    assert delays == sorted(delays) and delays[-1] <= POLICY.backoff_cap_us


@pytest.mark.parametrize(
    ("kind", "status", "message", "expected"),
    [
        (ErrorKind.TIMEOUT, "FAILED", "", ErrorKind.TIMEOUT),
        (ErrorKind.DEPENDENCY, "TIMED_OUT", "timeout", ErrorKind.DEPENDENCY),
        (ErrorKind.UNSPECIFIED, "TIMED_OUT", "", ErrorKind.TIMEOUT),
        (ErrorKind.UNSPECIFIED, "FAILED", "read timeout", ErrorKind.TIMEOUT),
        (ErrorKind.UNSPECIFIED, "FAILED", "Throttling: slow down", ErrorKind.RESOURCE_EXHAUSTED),
        (ErrorKind.UNKNOWN, "FAILED", "no idea", ErrorKind.UNKNOWN),
        (ErrorKind.UNSPECIFIED, "FAILED", "", ErrorKind.UNSPECIFIED),
        (ErrorKind.UNSPECIFIED, "FAILED", "timestamp parse error", ErrorKind.UNSPECIFIED),
    ],
)
def test_effective_kind(kind: ErrorKind, status: str, message: str, expected: ErrorKind) -> None:
    failure = Failure(kind=int(kind), message=message, task_status=status)
    assert effective_kind(failure) is expected
