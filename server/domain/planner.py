"""The recovery planner: facts about an agent in, one strategy out. Pure; no I/O.

Decision order (first match wins):

1. TERMINATED agent: NONE (nothing can be recovered).
2. The state version the agent points at cannot be read: RESTORE_CHECKPOINT when a
   verified checkpoint exists, else MANUAL_INTERVENTION.
3. A current failure (the newest failing task run that still needs work, else the
   agent's own error when it is in ERROR):
   - an INTERRUPTED task run (its lease ran out while no server was running, so the
     work was cut off, not slow): RETRY_WITH_BACKOFF, as below;
   then by its *effective* kind:
   - TIMEOUT: RETRY_WITH_LONGER_TIMEOUT, previous timeout x factor, capped;
   - RESOURCE_EXHAUSTED: RETRY_WITH_BACKOFF, exponential delay from the attempt count
     with jitter, capped;
   - anything else: MANUAL_INTERVENTION with the error.
4. ERROR without any recorded failure: MANUAL_INTERVENTION.
5. Otherwise NONE.

The structured ``error_kind`` decides. Only an unclassified failure (UNSPECIFIED or
UNKNOWN) is classified further: a TIMED_OUT task status counts as a timeout, and then,
as a last resort, words in the message ("timeout", "rate limit", ...).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum


class ErrorKind(IntEnum):
    """Mirrors ``stateward.v1.ErrorKind`` (the numbers are the wire values)."""

    UNSPECIFIED = 0
    TIMEOUT = 1
    RESOURCE_EXHAUSTED = 2
    DEPENDENCY = 3
    INVALID_INPUT = 4
    INTERNAL = 5
    UNKNOWN = 6


class Strategy(StrEnum):
    NONE = "NONE"
    RETRY_WITH_LONGER_TIMEOUT = "RETRY_WITH_LONGER_TIMEOUT"
    RETRY_WITH_BACKOFF = "RETRY_WITH_BACKOFF"
    RESTORE_CHECKPOINT = "RESTORE_CHECKPOINT"
    MANUAL_INTERVENTION = "MANUAL_INTERVENTION"


@dataclass(frozen=True, slots=True)
class Failure:
    """The failure a plan answers: a task run's, or the agent's own (``task_status`` None)."""

    kind: int
    message: str
    task_status: str | None = None  # FAILED | TIMED_OUT | INTERRUPTED | ...
    attempt: int = 1
    timeout_us: int | None = None
    heartbeat_timeout_us: int | None = None
    task_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    agent_id: str
    agent_status: str
    state_version: int = 0  # the version the agent points at; 0 = no state
    state_readable: bool = True  # whether that version could be read
    checkpoint_id: str | None = None  # newest checkpoint whose blob verified
    checkpoint_state_version: int = 0
    failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """Tunables from the server settings, in microseconds."""

    timeout_factor: float = 2.0
    timeout_cap_us: int = 3600 * 1_000_000
    backoff_base_us: int = 1_000_000
    backoff_cap_us: int = 300 * 1_000_000


@dataclass(frozen=True, slots=True)
class Plan:
    strategy: Strategy
    explanation: str
    suggested_timeout_us: int | None = None
    retry_delay_us: int | None = None
    checkpoint_id: str | None = None


_TIMEOUT_WORDS = re.compile(r"time[sd]?[\s_-]?out|deadline|lease expired", re.IGNORECASE)
_RESOURCE_WORDS = re.compile(
    r"resource|rate[\s_-]?limit|quota|too many requests|\b429\b|throttl|capacity|"
    r"out of memory|\boom\b|exhausted|overloaded",
    re.IGNORECASE,
)


def effective_kind(failure: Failure) -> ErrorKind:
    """The kind a failure is planned as: its own, unless it was left unclassified."""
    try:
        kind = ErrorKind(failure.kind)
    except ValueError:
        kind = ErrorKind.UNKNOWN
    if kind not in (ErrorKind.UNSPECIFIED, ErrorKind.UNKNOWN):
        return kind
    if failure.task_status == "TIMED_OUT":
        return ErrorKind.TIMEOUT
    if _TIMEOUT_WORDS.search(failure.message):
        return ErrorKind.TIMEOUT
    if _RESOURCE_WORDS.search(failure.message):
        return ErrorKind.RESOURCE_EXHAUSTED
    return kind


def longer_timeout_us(failure: Failure, policy: Policy) -> int:
    """The previous timeout (overall, else heartbeat) times the factor, capped.

    With no previous timeout to scale, the cap itself is suggested.
    """
    previous = failure.timeout_us or failure.heartbeat_timeout_us
    if not previous:
        return policy.timeout_cap_us
    return min(policy.timeout_cap_us, math.ceil(previous * policy.timeout_factor))


def backoff_delay_us(attempt: int, policy: Policy, rand: Callable[[], float]) -> int:
    """Exponential in the attempt count (base, 2 x base, 4 x base ...), capped, with
    "equal jitter": a uniform pick in [d/2, d) so retries spread out but never bunch at 0."""
    exponent = max(attempt, 1) - 1
    ceiling = policy.backoff_cap_us
    # Compare in floating point first: 2**exponent can be huge for a long retry chain.
    raw = policy.backoff_base_us * math.pow(2.0, min(exponent, 1023))
    delay = ceiling if raw >= ceiling else int(raw)
    return int(delay / 2 + rand() * delay / 2)


def _seconds(us: int) -> str:
    value = us / 1_000_000
    return f"{value:g} s"


def _describe(failure: Failure) -> str:
    if failure.task_run_id:
        status = (failure.task_status or "failed").lower().replace("_", " ")
        subject = f"task run {failure.task_run_id} ({status}, attempt {failure.attempt})"
    else:
        subject = "the agent's reported error"
    return f"{subject}: {failure.message or 'no message'}"


def plan(facts: Facts, policy: Policy, rand: Callable[[], float] = random.random) -> Plan:
    """Choose a strategy for ``facts``; ``rand`` (in [0, 1)) is injectable for tests."""
    if facts.agent_status == "TERMINATED":
        return Plan(Strategy.NONE, f"agent {facts.agent_id!r} is TERMINATED; nothing to recover")

    if facts.state_version > 0 and not facts.state_readable:
        if facts.checkpoint_id:
            return Plan(
                Strategy.RESTORE_CHECKPOINT,
                f"state version {facts.state_version} cannot be read; restore checkpoint "
                f"{facts.checkpoint_id} (state version {facts.checkpoint_state_version})",
                checkpoint_id=facts.checkpoint_id,
            )
        return Plan(
            Strategy.MANUAL_INTERVENTION,
            f"state version {facts.state_version} cannot be read and no verified checkpoint "
            "exists to restore from",
        )

    failure = facts.failure
    if failure is not None:
        kind = effective_kind(failure)
        described = _describe(failure)
        if failure.task_status == "INTERRUPTED":
            # The sweeper records these with kind TIMEOUT (a lease did run out), but a
            # longer timeout would not help: the worker lost its server, not its time.
            delay = backoff_delay_us(failure.attempt, policy, rand)
            return Plan(
                Strategy.RETRY_WITH_BACKOFF,
                f"{described}; it was cut off while no Stateward server was running, not by "
                f"its own failure, so retry it after {_seconds(delay)}",
                retry_delay_us=delay,
            )
        if kind is ErrorKind.TIMEOUT:
            timeout = longer_timeout_us(failure, policy)
            capped = " (the configured cap)" if timeout == policy.timeout_cap_us else ""
            return Plan(
                Strategy.RETRY_WITH_LONGER_TIMEOUT,
                f"{described}; it timed out, so retry with a timeout of "
                f"{_seconds(timeout)}{capped}",
                suggested_timeout_us=timeout,
            )
        if kind is ErrorKind.RESOURCE_EXHAUSTED:
            delay = backoff_delay_us(failure.attempt, policy, rand)
            return Plan(
                Strategy.RETRY_WITH_BACKOFF,
                f"{described}; a resource was exhausted, so retry after {_seconds(delay)}",
                retry_delay_us=delay,
            )
        return Plan(
            Strategy.MANUAL_INTERVENTION,
            f"{described}; a {kind.name} failure needs a person to look at it",
        )

    if facts.agent_status == "ERROR":
        return Plan(
            Strategy.MANUAL_INTERVENTION,
            f"agent {facts.agent_id!r} is in ERROR without a recorded failure",
        )
    return Plan(Strategy.NONE, f"agent {facts.agent_id!r} has no failure to recover from")
