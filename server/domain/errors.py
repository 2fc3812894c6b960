"""Domain errors: what went wrong, independent of the transport.

    DomainError
     +-- InvalidArgument      bad input; carries field violations
     +-- NotFound             the record does not exist (in this namespace)
     +-- AlreadyExists        a record with that id exists
     +-- FailedPrecondition   the record is not in a state that allows the call
     |    +-- InvalidTransition   a lifecycle transition the state machine forbids
     +-- Conflict             a compare-and-set lost (stale etag or version)
     +-- ResourceExhausted    a limit was reached
     |    +-- RecordTooLarge      a write would make a record too big for one answer
     |    +-- BatchAnswerFull     a batch's answer had no room for this request
     +-- Unavailable          a dependency is down; retry later
     +-- DataLoss             stored bytes failed their integrity check

``server/rpc/status.py`` maps each to one gRPC status code, in one table.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base class; ``reason`` is a stable, machine-readable code."""

    reason = "ERROR"

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}


class InvalidArgument(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {summary}")
        self.violations = violations

    @classmethod
    def one(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(DomainError):
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "FAILED_PRECONDITION",
        subject: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata)
        self.reason = reason
        self.subject = subject


class InvalidTransition(FailedPrecondition):
    def __init__(self, agent_id: str, current: str, target: str, allowed: list[str]) -> None:
        allowed_text = ", ".join(allowed) if allowed else "none (terminal)"
        super().__init__(
            f"agent {agent_id!r} is {current}; it cannot move to {target} "
            f"(allowed from {current}: {allowed_text})",
            reason="INVALID_TRANSITION",
            subject=f"agents/{agent_id}",
            metadata={
                "current_status": current,
                "target_status": target,
                "allowed_statuses": ",".join(allowed),
            },
        )
        self.current = current
        self.allowed = allowed


class Conflict(DomainError):
    reason = "CONFLICT"

    def __init__(
        self, message: str, *, reason: str = "CONFLICT", metadata: dict[str, str] | None = None
    ):
        super().__init__(message, metadata=metadata)
        self.reason = reason


class ResourceExhausted(DomainError):
    reason = "RESOURCE_EXHAUSTED"


class RecordTooLarge(ResourceExhausted):
    """A write would make a record heavier than one answer can carry: it could then be
    neither read nor listed. Nothing was written."""

    reason = "RECORD_TOO_LARGE"


class BatchAnswerFull(ResourceExhausted):
    """A batch's answer had no room left for this request: send it again (alone fits)."""

    reason = "BATCH_ANSWER_FULL"


class Unavailable(DomainError):
    reason = "UNAVAILABLE"


class DataLoss(DomainError):
    reason = "DATA_LOSS"


@dataclass(slots=True)
class Violations:
    """Collects field violations, then raises them together."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_name: str, description: str) -> None:
        self.items.append(FieldViolation(field_name, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)
