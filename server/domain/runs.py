"""Workflow-run and task-run rules: status machines, leases, ids and event types.

Pure Python: no gRPC, no SQLAlchemy. Times are integer microseconds (UTC).

Workflow runs:  PENDING -> RUNNING | CANCELLED
                RUNNING -> COMPLETED | FAILED | CANCELLED | INTERRUPTED
Task runs:      RUNNING -> COMPLETED | FAILED | TIMED_OUT | CANCELLED | INTERRUPTED
Every other status is final.

A task run's lease is the earlier of ``start + timeout`` and ``last heartbeat +
heartbeat_timeout``. A task started with neither timeout gets the default heartbeat
timeout, so a worker that dies never leaves its task RUNNING forever.

A workflow run has a lease only when started with a heartbeat timeout: ``last heartbeat
(or start) + heartbeat_timeout``. One that runs out makes the run INTERRUPTED.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum

from stateward.server.domain.errors import FailedPrecondition, Violations


class RunStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"


class TaskStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"


RUN_ALLOWED: dict[RunStatus, tuple[RunStatus, ...]] = {
    RunStatus.PENDING: (RunStatus.RUNNING, RunStatus.CANCELLED),
    RunStatus.RUNNING: (
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.INTERRUPTED,
    ),
    RunStatus.COMPLETED: (),
    RunStatus.FAILED: (),
    RunStatus.CANCELLED: (),
    RunStatus.INTERRUPTED: (),
}

TASK_ALLOWED: dict[TaskStatus, tuple[TaskStatus, ...]] = {
    TaskStatus.RUNNING: (
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.TIMED_OUT,
        TaskStatus.CANCELLED,
        TaskStatus.INTERRUPTED,
    ),
    **{status: () for status in TaskStatus if status is not TaskStatus.RUNNING},
}

# The event each arrival status emits.
RUN_EVENTS: dict[RunStatus, str] = {
    RunStatus.RUNNING: "run.started",
    RunStatus.COMPLETED: "run.completed",
    RunStatus.FAILED: "run.failed",
    RunStatus.CANCELLED: "run.cancelled",
    RunStatus.INTERRUPTED: "run.interrupted",
}
TASK_EVENTS: dict[TaskStatus, str] = {
    TaskStatus.RUNNING: "task.started",
    TaskStatus.COMPLETED: "task.completed",
    TaskStatus.FAILED: "task.failed",
    TaskStatus.TIMED_OUT: "task.timed_out",
    TaskStatus.CANCELLED: "task.cancelled",
    TaskStatus.INTERRUPTED: "task.interrupted",
}

SECOND = 1_000_000
# Applied when a task run names neither a timeout nor a heartbeat timeout.
DEFAULT_HEARTBEAT_TIMEOUT_US = 300 * SECOND
MAX_TIMEOUT_US = 366 * 86400 * SECOND
MAX_DOCUMENT = 1 << 20  # run/task input, result, progress, compensation
MAX_EVENT_DATA = 64 << 10
MAX_EVENTS_PER_APPEND = 1000
MAX_FILTER_TYPES = 64
ERROR_KIND_TIMEOUT = 1  # stateward.v1.ErrorKind.ERROR_KIND_TIMEOUT
ERROR_KINDS = range(0, 7)  # stateward.v1.ErrorKind values

EVENT_TYPE_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,127}")
SYSTEM_PREFIXES = ("agent.", "state.", "run.", "task.", "checkpoint.")


# -- status machines -------------------------------------------------------------------
def run_can_move(current: RunStatus, target: RunStatus) -> bool:
    return target in RUN_ALLOWED[current]


def task_can_move(current: TaskStatus, target: TaskStatus) -> bool:
    return target in TASK_ALLOWED[current]


def require_run_move(run_id: str, current: str, target: RunStatus) -> None:
    """FAILED_PRECONDITION (INVALID_RUN_STATUS) unless the run may move to ``target``."""
    status = RunStatus(current)
    if run_can_move(status, target):
        return
    allowed = [s.value for s in RUN_ALLOWED[status]]
    allowed_text = ", ".join(allowed) if allowed else "none (final)"
    raise FailedPrecondition(
        f"workflow run {run_id!r} is {status.value}; it cannot become {target.value} "
        f"(allowed from {status.value}: {allowed_text})",
        reason="INVALID_RUN_STATUS",
        subject=f"runs/{run_id}",
        metadata={
            "current_status": status.value,
            "target_status": target.value,
            "allowed_statuses": ",".join(allowed),
        },
    )


def require_run_running(run_id: str, current: str, action: str = "start task runs") -> None:
    """FAILED_PRECONDITION (INVALID_RUN_STATUS) unless the workflow run is RUNNING."""
    if current != RunStatus.RUNNING.value:
        raise FailedPrecondition(
            f"workflow run {run_id!r} is {current}; only a RUNNING run can {action}",
            reason="INVALID_RUN_STATUS",
            subject=f"runs/{run_id}",
            metadata={"current_status": current, "required_status": RunStatus.RUNNING.value},
        )


def require_task_running(task_run_id: str, current: str, action: str) -> None:
    """FAILED_PRECONDITION (INVALID_TASK_STATUS) unless the task run is RUNNING."""
    if current != TaskStatus.RUNNING.value:
        raise FailedPrecondition(
            f"task run {task_run_id!r} is {current}; only a RUNNING task run can {action}",
            reason="INVALID_TASK_STATUS",
            subject=f"task-runs/{task_run_id}",
            metadata={"current_status": current, "required_status": TaskStatus.RUNNING.value},
        )


def failure_status(cancel_requested: bool) -> TaskStatus:
    """A worker that reports failure after cancellation was requested stopped because of it."""
    return TaskStatus.CANCELLED if cancel_requested else TaskStatus.FAILED


def expiry_status(cancel_requested: bool) -> TaskStatus:
    """A lease that runs out after cancellation was requested ends the task as CANCELLED."""
    return TaskStatus.CANCELLED if cancel_requested else TaskStatus.TIMED_OUT


# -- leases ------------------------------------------------------------------------------
def effective_timeouts(
    timeout_us: int | None, heartbeat_us: int | None
) -> tuple[int | None, int | None]:
    """The timeouts a task run gets: with neither given, the default heartbeat timeout."""
    if timeout_us is None and heartbeat_us is None:
        return None, DEFAULT_HEARTBEAT_TIMEOUT_US
    return timeout_us, heartbeat_us


def lease_expiry(
    started_at: int, timeout_us: int | None, last_heartbeat_at: int | None, heartbeat_us: int | None
) -> int | None:
    """When the lease runs out: min(start + timeout, last heartbeat + heartbeat timeout)."""
    bounds = []
    if timeout_us is not None:
        bounds.append(started_at + timeout_us)
    if heartbeat_us is not None:
        bounds.append(
            (last_heartbeat_at if last_heartbeat_at is not None else started_at) + heartbeat_us
        )
    return min(bounds) if bounds else None


def lease_expired(lease_expires_at: int | None, now: int) -> bool:
    return lease_expires_at is not None and lease_expires_at < now


def _seconds(us: int) -> str:
    text = f"{us / SECOND:.3f}".rstrip("0").rstrip(".")
    return f"{text} s"


def expiry_message(
    started_at: int, timeout_us: int | None, heartbeat_us: int | None, lease_expires_at: int
) -> str:
    """Which timeout ran out, in words a person can act on."""
    if timeout_us is not None and started_at + timeout_us <= lease_expires_at:
        return f"the task run exceeded its timeout of {_seconds(timeout_us)}"
    if heartbeat_us is not None:
        return f"no heartbeat arrived within the heartbeat timeout of {_seconds(heartbeat_us)}"
    return "the task run's lease expired"


def run_lease_expiry(now: int, heartbeat_us: int | None) -> int | None:
    """A workflow run's lease after a start or heartbeat at ``now``; None without one."""
    return now + heartbeat_us if heartbeat_us is not None else None


def run_expiry_message(heartbeat_us: int | None) -> str:
    """Why a run's lease ran out, in words a person can act on."""
    limit = f" of {_seconds(heartbeat_us)}" if heartbeat_us is not None else ""
    return (
        f"no heartbeat arrived within the run's heartbeat timeout{limit}: the process driving "
        "it stopped or lost contact"
    )


def interruption_grace_us(sweep_interval_s: float) -> int:
    """How long ago a lease must have expired for a starting server to call it an interruption.

    A lease that expired more recently may belong to a live replica's next sweep (an
    ordinary TIMED_OUT); one that expired earlier than two sweep intervals plus a
    second can only have expired while no server was sweeping.
    """
    return int((2 * sweep_interval_s + 1.0) * SECOND)


# -- ids -----------------------------------------------------------------------------------
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str, now_us: int) -> str:
    """``prefix`` + a 26-character ULID: 48 bits of milliseconds, then 80 random bits.

    Ids sort by creation time (to the millisecond) as plain strings.
    """
    value = ((now_us // 1000) & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))


def new_run_id(now_us: int) -> str:
    return new_id("run-", now_us)


def new_task_run_id(now_us: int) -> str:
    return new_id("task-", now_us)


# -- client event types ----------------------------------------------------------------------
def check_event_type(v: Violations, field: str, value: str) -> None:
    if not EVENT_TYPE_PATTERN.fullmatch(value):
        v.add(
            field,
            "must be 1 to 128 characters of letters, digits and _ . : -, starting with a letter",
        )
    elif value.startswith(SYSTEM_PREFIXES):
        v.add(
            field,
            f"{value!r} uses a system prefix ({', '.join(SYSTEM_PREFIXES)}); "
            "choose another name for client events",
        )


def check_duration(v: Violations, field: str, value_us: int | None) -> None:
    if value_us is None:
        return
    if value_us <= 0:
        v.add(field, "must be positive (leave it unset for none)")
    elif value_us > MAX_TIMEOUT_US:
        v.add(field, "must be at most 366 days")
