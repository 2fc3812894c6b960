"""Plain records returned by the storage layer (no SQLAlchemy types escape it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ErrorRecord:
    message: str
    kind: int
    retryable: bool
    details: bytes
    at: int


@dataclass(slots=True)
class AgentRecord:
    namespace: str
    agent_id: str
    type: str
    config: bytes
    labels: dict[str, str]
    status: str
    generation: int
    state_version: int
    state_last_version: int
    created_at: int
    updated_at: int
    initialized_at: int | None = None
    activated_at: int | None = None
    paused_at: int | None = None
    terminated_at: int | None = None
    error: ErrorRecord | None = None

    @property
    def etag(self) -> str:
        return str(self.generation)


@dataclass(slots=True)
class TransitionRecord:
    id: int
    namespace: str
    agent_id: str
    from_status: str | None
    to_status: str
    reason: str
    request_id: str
    event_sequence: int
    created_at: int


@dataclass(slots=True)
class EventRecord:
    namespace: str
    sequence: int
    type: str
    data: bytes
    created_at: int
    agent_id: str | None = None
    run_id: str | None = None
    task_run_id: str | None = None
    client_time: int | None = None


def error_from_row(row: Any) -> ErrorRecord | None:
    if row.error_at is None:
        return None
    return ErrorRecord(
        row.error_message or "",
        row.error_kind or 0,
        bool(row.error_retryable),
        row.error_details or b"",
        row.error_at,
    )


def error_columns(error: ErrorRecord | None) -> dict[str, Any]:
    if error is None:
        return dict(
            error_message=None,
            error_kind=None,
            error_retryable=None,
            error_details=None,
            error_at=None,
        )
    return dict(
        error_message=error.message,
        error_kind=error.kind,
        error_retryable=error.retryable,
        error_details=error.details,
        error_at=error.at,
    )


def dump_labels(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class Page:
    """One page of records plus the cursor of the last one, if more may follow."""

    items: list[Any] = field(default_factory=list)
    more: bool = False
