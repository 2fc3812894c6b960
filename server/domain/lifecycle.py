"""The agent lifecycle state machine (DESIGN section 2), as data."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    CREATED = "CREATED"
    INITIALIZED = "INITIALIZED"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"


ALLOWED: dict[Status, tuple[Status, ...]] = {
    Status.CREATED: (Status.INITIALIZED, Status.TERMINATED, Status.ERROR),
    Status.INITIALIZED: (Status.ACTIVE, Status.TERMINATED, Status.ERROR),
    Status.ACTIVE: (Status.PAUSED, Status.TERMINATED, Status.ERROR),
    Status.PAUSED: (Status.ACTIVE, Status.TERMINATED, Status.ERROR),
    Status.ERROR: (Status.INITIALIZED, Status.TERMINATED),
    Status.TERMINATED: (),
}


class Action(StrEnum):
    """A lifecycle RPC: the target it moves to and the statuses it may start from."""

    INITIALIZE = "initialize"
    ACTIVATE = "activate"
    PAUSE = "pause"
    RESUME = "resume"
    TERMINATE = "terminate"
    REPORT_ERROR = "report_error"
    RESET = "reset"


# Resume and activate share a target but not a source, as do initialize and reset:
# each action names the sources it accepts, a subset of the table above.
ACTIONS: dict[Action, tuple[Status, frozenset[Status]]] = {
    Action.INITIALIZE: (Status.INITIALIZED, frozenset({Status.CREATED})),
    Action.ACTIVATE: (Status.ACTIVE, frozenset({Status.INITIALIZED})),
    Action.PAUSE: (Status.PAUSED, frozenset({Status.ACTIVE})),
    Action.RESUME: (Status.ACTIVE, frozenset({Status.PAUSED})),
    Action.TERMINATE: (
        Status.TERMINATED,
        frozenset({Status.CREATED, Status.INITIALIZED, Status.ACTIVE, Status.PAUSED, Status.ERROR}),
    ),
    Action.REPORT_ERROR: (
        Status.ERROR,
        frozenset({Status.CREATED, Status.INITIALIZED, Status.ACTIVE, Status.PAUSED}),
    ),
    Action.RESET: (Status.INITIALIZED, frozenset({Status.ERROR})),
}


def can_transition(current: Status, target: Status) -> bool:
    return target in ALLOWED[current]


def allowed_targets(current: Status) -> list[Status]:
    return list(ALLOWED[current])


def target_of(action: Action, current: Status) -> Status | None:
    """The status ``action`` moves an agent in ``current`` to, or None if refused."""
    target, sources = ACTIONS[action]
    if current in sources and can_transition(current, target):
        return target
    return None


# The agent timestamp column each arrival status stamps.
STAMPS: dict[Status, str] = {
    Status.INITIALIZED: "initialized_at",
    Status.ACTIVE: "activated_at",
    Status.PAUSED: "paused_at",
    Status.TERMINATED: "terminated_at",
}
