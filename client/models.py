"""What the client returns: frozen dataclasses converted from the protos.

Conventions, the same for every model:

* Field names follow the protos (``create_time``, ``state_version``...).
* JSON documents are decoded with ``json.loads``: integers of any size stay
  exact. Object fields (``config``, ``data``) are ``{}`` when empty; value
  fields (``input``, ``result``) are ``None`` when empty.
* Times are timezone-aware UTC ``datetime``; durations are ``timedelta``;
  either is ``None`` when unset.
* Proto enums become ``StrEnum`` members named without their prefix
  (``AgentStatus.ACTIVE == "ACTIVE"``); an UNSPECIFIED value is ``None``.

Each model has a ``from_proto`` classmethod, the one place its message is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from stateward.v1 import (
    common_pb2,
    execution_pb2,
    lifecycle_pb2,
    recovery_pb2,
    state_pb2,
)

from ._codec import (
    decode_json,
    decode_object,
    encode_json_or_empty,
    enum_from_proto,
    enum_to_proto,
    str_map,
    to_datetime,
    to_timedelta,
    to_timestamp,
)

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


class AgentStatus(StrEnum):
    """Where an agent is in its lifecycle."""

    CREATED = "CREATED"
    INITIALIZED = "INITIALIZED"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"


class ErrorKind(StrEnum):
    """Machine-readable classification of a failure; recovery planning keys on it."""

    TIMEOUT = "TIMEOUT"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    DEPENDENCY = "DEPENDENCY"
    INVALID_INPUT = "INVALID_INPUT"
    INTERNAL = "INTERNAL"
    UNKNOWN = "UNKNOWN"


class RunStatus(StrEnum):
    """Status of a workflow run."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"


class TaskStatus(StrEnum):
    """Status of a task run."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"


class RecoveryStrategy(StrEnum):
    """How a recovery plan proposes to get an agent back."""

    NONE = "NONE"
    RETRY_WITH_LONGER_TIMEOUT = "RETRY_WITH_LONGER_TIMEOUT"
    RETRY_WITH_BACKOFF = "RETRY_WITH_BACKOFF"
    RESTORE_CHECKPOINT = "RESTORE_CHECKPOINT"
    MANUAL_INTERVENTION = "MANUAL_INTERVENTION"


# Each Python enum, its proto enum and the prefix of the proto value names.
_PROTO_ENUMS: dict[type[StrEnum], tuple[Any, str]] = {
    AgentStatus: (lifecycle_pb2.AgentStatus, "AGENT_STATUS_"),
    ErrorKind: (common_pb2.ErrorKind, "ERROR_KIND_"),
    RunStatus: (execution_pb2.RunStatus, "RUN_STATUS_"),
    TaskStatus: (execution_pb2.TaskStatus, "TASK_STATUS_"),
    RecoveryStrategy: (recovery_pb2.RecoveryStrategy, "RECOVERY_STRATEGY_"),
}


def from_proto_enum(cls: type[E], value: int) -> E | None:
    """The member of ``cls`` for a proto enum number; None for UNSPECIFIED."""
    proto_enum, prefix = _PROTO_ENUMS[cls]
    return enum_from_proto(cls, proto_enum, prefix, value)


def to_proto_enum(cls: type[E], value: E | str | None) -> str:
    """The proto enum value name for a member or name (any case); None is UNSPECIFIED.

    Raises UsageError for a name that is not a member.
    """
    return enum_to_proto(cls, _PROTO_ENUMS[cls][1], value)


def _required(cls: type[E], value: int) -> E:
    """A proto enum the server always sets; UNSPECIFIED would be a server bug."""
    member = from_proto_enum(cls, value)
    if member is None:
        raise ValueError(f"the server sent an UNSPECIFIED {cls.__name__}")
    return member


# -- lifecycle -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """A failure reported by an agent, a task run or a workflow run."""

    message: str
    kind: ErrorKind = ErrorKind.UNKNOWN
    retryable: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    time: datetime | None = None

    @classmethod
    def from_proto(cls, msg: common_pb2.ErrorDetail) -> ErrorDetail:
        return cls(
            message=msg.message,
            kind=from_proto_enum(ErrorKind, msg.kind) or ErrorKind.UNKNOWN,
            retryable=msg.retryable,
            details=decode_object(msg.details_json),
            time=to_datetime(msg, "time"),
        )

    @classmethod
    def optional(cls, parent: Any, name: str) -> ErrorDetail | None:
        """The ErrorDetail field ``parent.<name>``, None when unset."""
        return cls.from_proto(getattr(parent, name)) if parent.HasField(name) else None


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent managed by Stateward."""

    agent_id: str
    type: str
    status: AgentStatus
    config: dict[str, Any]
    labels: dict[str, str]
    last_error: ErrorDetail | None
    etag: str
    """Opaque version of the record; pass it to ``update_agent(etag=...)``."""
    state_version: int
    """Latest state version; 0 when the agent has no state."""
    create_time: datetime | None
    update_time: datetime | None
    initialize_time: datetime | None
    activate_time: datetime | None
    pause_time: datetime | None
    terminate_time: datetime | None

    @classmethod
    def from_proto(cls, msg: lifecycle_pb2.Agent) -> Agent:
        return cls(
            agent_id=msg.agent_id,
            type=msg.type,
            status=_required(AgentStatus, msg.status),
            config=decode_object(msg.config_json),
            labels=str_map(msg.labels),
            last_error=ErrorDetail.optional(msg, "last_error"),
            etag=msg.etag,
            state_version=msg.state_version,
            create_time=to_datetime(msg, "create_time"),
            update_time=to_datetime(msg, "update_time"),
            initialize_time=to_datetime(msg, "initialize_time"),
            activate_time=to_datetime(msg, "activate_time"),
            pause_time=to_datetime(msg, "pause_time"),
            terminate_time=to_datetime(msg, "terminate_time"),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """One audited lifecycle transition."""

    transition_id: int
    agent_id: str
    from_status: AgentStatus | None
    """None for the creation record."""
    to_status: AgentStatus
    reason: str
    request_id: str
    create_time: datetime | None
    event_sequence: int

    @classmethod
    def from_proto(cls, msg: lifecycle_pb2.Transition) -> Transition:
        return cls(
            transition_id=msg.transition_id,
            agent_id=msg.agent_id,
            from_status=from_proto_enum(AgentStatus, msg.from_status),
            to_status=_required(AgentStatus, msg.to_status),
            reason=msg.reason,
            request_id=msg.request_id,
            create_time=to_datetime(msg, "create_time"),
            event_sequence=msg.event_sequence,
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing. Iterate it for its items."""

    items: list[T]
    next_page_token: str = ""
    """Pass as ``page_token`` for the next page; empty on the last page."""

    @property
    def has_next(self) -> bool:
        return bool(self.next_page_token)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


# -- state ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateVersion:
    """One version of an agent's state document."""

    agent_id: str
    version: int
    document: dict[str, Any] | None
    """The document; None when the server sent none (SaveState, listings without documents)."""
    schema_version: int
    size_bytes: int
    create_time: datetime | None
    event_sequence: int

    @classmethod
    def from_proto(cls, msg: state_pb2.StateVersion) -> StateVersion:
        document = decode_json(msg.document_json)
        return cls(
            agent_id=msg.agent_id,
            version=msg.version,
            document=document if isinstance(document, dict) else None,
            schema_version=msg.schema_version,
            size_bytes=msg.size_bytes,
            create_time=to_datetime(msg, "create_time"),
            event_sequence=msg.event_sequence,
        )


@dataclass(frozen=True, slots=True)
class BatchStates:
    """The answer of ``batch_get_states``."""

    states: list[StateVersion]
    """The latest state of each agent that has one, in request order."""
    missing_agent_ids: list[str]
    """Requested agents that do not exist or have no state."""

    @classmethod
    def from_proto(cls, msg: state_pb2.BatchGetStatesResponse) -> BatchStates:
        return cls(
            states=[StateVersion.from_proto(s) for s in msg.states],
            missing_agent_ids=list(msg.missing_agent_ids),
        )


@dataclass(frozen=True, slots=True)
class MigrationFailure:
    """A state ``migrate_states`` could not upgrade; it stays as it was."""

    agent_id: str
    from_schema_version: int
    """The schema version whose migration failed."""
    message: str

    @classmethod
    def from_proto(cls, msg: state_pb2.MigrationFailure) -> MigrationFailure:
        return cls(msg.agent_id, msg.from_schema_version, msg.message)


@dataclass(frozen=True, slots=True)
class MigrationPage:
    """What one ``migrate_states`` call did (or would do, on a dry run)."""

    migrated: int
    """States upgraded in this call (or that would be, on a dry run)."""
    up_to_date: int
    """States examined that were already at the target schema version."""
    remaining: int
    """Agents of the type still to examine after this page."""
    target_schema_version: int
    """The newest schema version registered for the type."""
    next_page_token: str
    """Pass as ``page_token`` to continue; empty when every state was examined."""
    failures: list[MigrationFailure] = field(default_factory=list)
    """States of this page whose upgrade failed (the others were upgraded)."""

    @classmethod
    def from_proto(cls, msg: state_pb2.MigrateStatesResponse) -> MigrationPage:
        return cls(
            migrated=msg.migrated,
            up_to_date=msg.up_to_date,
            remaining=msg.remaining,
            target_schema_version=msg.target_schema_version,
            next_page_token=msg.next_page_token,
            failures=[MigrationFailure.from_proto(f) for f in msg.failures],
        )


# -- execution -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """One execution of a named workflow."""

    run_id: str
    workflow_name: str
    agent_id: str
    status: RunStatus
    input: Any
    result: Any
    error: ErrorDetail | None
    labels: dict[str, str]
    attempt: int
    retry_of_run_id: str
    root_run_id: str
    cancel_requested: bool
    create_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    update_time: datetime | None
    heartbeat_timeout: timedelta | None = None
    """Longest allowed gap between heartbeats; None when the run has no lease."""
    last_heartbeat_time: datetime | None = None
    lease_expire_time: datetime | None = None
    """While RUNNING with a heartbeat timeout: when the run is INTERRUPTED unless renewed."""

    @classmethod
    def from_proto(cls, msg: execution_pb2.WorkflowRun) -> WorkflowRun:
        return cls(
            run_id=msg.run_id,
            workflow_name=msg.workflow_name,
            agent_id=msg.agent_id,
            status=_required(RunStatus, msg.status),
            input=decode_json(msg.input_json),
            result=decode_json(msg.result_json),
            error=ErrorDetail.optional(msg, "error"),
            labels=str_map(msg.labels),
            attempt=msg.attempt,
            retry_of_run_id=msg.retry_of_run_id,
            root_run_id=msg.root_run_id,
            cancel_requested=msg.cancel_requested,
            create_time=to_datetime(msg, "create_time"),
            start_time=to_datetime(msg, "start_time"),
            end_time=to_datetime(msg, "end_time"),
            update_time=to_datetime(msg, "update_time"),
            heartbeat_timeout=to_timedelta(msg, "heartbeat_timeout"),
            last_heartbeat_time=to_datetime(msg, "last_heartbeat_time"),
            lease_expire_time=to_datetime(msg, "lease_expire_time"),
        )


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One attempt of one task inside a workflow run."""

    task_run_id: str
    run_id: str
    task_id: str
    agent_id: str
    attempt: int
    status: TaskStatus
    input: Any
    result: Any
    error: ErrorDetail | None
    timeout: timedelta | None
    heartbeat_timeout: timedelta | None
    progress: Any
    compensation: Any
    carried_from_task_run_id: str
    cancel_requested: bool
    start_time: datetime | None
    end_time: datetime | None
    last_heartbeat_time: datetime | None
    lease_expire_time: datetime | None

    @classmethod
    def from_proto(cls, msg: execution_pb2.TaskRun) -> TaskRun:
        return cls(
            task_run_id=msg.task_run_id,
            run_id=msg.run_id,
            task_id=msg.task_id,
            agent_id=msg.agent_id,
            attempt=msg.attempt,
            status=_required(TaskStatus, msg.status),
            input=decode_json(msg.input_json),
            result=decode_json(msg.result_json),
            error=ErrorDetail.optional(msg, "error"),
            timeout=to_timedelta(msg, "timeout"),
            heartbeat_timeout=to_timedelta(msg, "heartbeat_timeout"),
            progress=decode_json(msg.progress_json),
            compensation=decode_json(msg.compensation_json),
            carried_from_task_run_id=msg.carried_from_task_run_id,
            cancel_requested=msg.cancel_requested,
            start_time=to_datetime(msg, "start_time"),
            end_time=to_datetime(msg, "end_time"),
            last_heartbeat_time=to_datetime(msg, "last_heartbeat_time"),
            lease_expire_time=to_datetime(msg, "lease_expire_time"),
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The answer to a heartbeat."""

    cancel_requested: bool
    """The run was cancelled: the worker should stop."""
    lease_expire_time: datetime | None

    @classmethod
    def from_proto(cls, msg: execution_pb2.HeartbeatResponse) -> Heartbeat:
        return cls(
            cancel_requested=msg.cancel_requested,
            lease_expire_time=to_datetime(msg, "lease_expire_time"),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """An entry of the namespace's event log."""

    sequence: int
    type: str
    agent_id: str
    run_id: str
    task_run_id: str
    data: dict[str, Any]
    create_time: datetime | None
    client_time: datetime | None

    @classmethod
    def from_proto(cls, msg: execution_pb2.Event) -> Event:
        return cls(
            sequence=msg.sequence,
            type=msg.type,
            agent_id=msg.agent_id,
            run_id=msg.run_id,
            task_run_id=msg.task_run_id,
            data=decode_object(msg.data_json),
            create_time=to_datetime(msg, "create_time"),
            client_time=to_datetime(msg, "client_time"),
        )


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A client run event to append; give ``run_id`` or ``task_run_id``."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    task_run_id: str = ""
    client_time: datetime | None = None
    """When the event happened, by the client's clock (optional)."""

    def to_proto(self) -> execution_pb2.NewEvent:
        return execution_pb2.NewEvent(
            type=self.type,
            data_json=encode_json_or_empty(self.data or None),
            run_id=self.run_id,
            task_run_id=self.task_run_id,
            client_time=to_timestamp(self.client_time) if self.client_time else None,
        )


@dataclass(frozen=True, slots=True)
class AppendedEvents:
    """The sequences given to a batch of appended events (consecutive)."""

    first_sequence: int
    last_sequence: int

    @classmethod
    def from_proto(cls, msg: execution_pb2.AppendEventsResponse) -> AppendedEvents:
        return cls(first_sequence=msg.first_sequence, last_sequence=msg.last_sequence)


# -- recovery ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Manifest of a stored checkpoint."""

    checkpoint_id: str
    agent_id: str
    state_version: int
    size_bytes: int
    sha256: str
    compression: str
    labels: dict[str, str]
    create_time: datetime | None
    payload: bytes | None = None
    """The payload, only from ``list_checkpoints(include_payloads=True)`` and only when the
    server stores it inline (small payloads); otherwise download it."""

    @classmethod
    def from_proto(cls, msg: recovery_pb2.Checkpoint) -> Checkpoint:
        return cls(
            checkpoint_id=msg.checkpoint_id,
            agent_id=msg.agent_id,
            state_version=msg.state_version,
            size_bytes=msg.size_bytes,
            sha256=msg.sha256,
            compression=msg.compression,
            labels=str_map(msg.labels),
            create_time=to_datetime(msg, "create_time"),
            payload=msg.payload if msg.HasField("payload") else None,
        )


@dataclass(frozen=True, slots=True)
class RestoredCheckpoint:
    """The answer of ``restore_checkpoint``."""

    state_version: int
    """The new state version written from the checkpoint."""
    agent: Agent

    @classmethod
    def from_proto(cls, msg: recovery_pb2.RestoreCheckpointResponse) -> RestoredCheckpoint:
        return cls(state_version=msg.state_version, agent=Agent.from_proto(msg.agent))


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """What a recovery plan knows about an agent and proposes to do."""

    agent_id: str
    agent_status: AgentStatus
    last_good_state_version: int
    last_failure: TaskRun | None
    failed_task_runs: list[TaskRun]
    checkpoint: Checkpoint | None
    strategy: RecoveryStrategy
    suggested_timeout: timedelta | None
    retry_delay: timedelta | None
    explanation: str
    failed_task_runs_truncated: bool = False
    """True when ``failed_task_runs`` holds only the newest: all would not fit in one
    response. ``list_task_runs`` lists the rest."""

    @classmethod
    def from_proto(cls, msg: recovery_pb2.RecoveryPlan) -> RecoveryPlan:
        return cls(
            agent_id=msg.agent_id,
            agent_status=_required(AgentStatus, msg.agent_status),
            last_good_state_version=msg.last_good_state_version,
            last_failure=(
                TaskRun.from_proto(msg.last_failure) if msg.HasField("last_failure") else None
            ),
            failed_task_runs=[TaskRun.from_proto(t) for t in msg.failed_task_runs],
            checkpoint=(
                Checkpoint.from_proto(msg.checkpoint) if msg.HasField("checkpoint") else None
            ),
            strategy=_required(RecoveryStrategy, msg.strategy),
            suggested_timeout=to_timedelta(msg, "suggested_timeout"),
            retry_delay=to_timedelta(msg, "retry_delay"),
            explanation=msg.explanation,
            failed_task_runs_truncated=msg.failed_task_runs_truncated,
        )


@dataclass(frozen=True, slots=True)
class RetriedRun:
    """The answer of ``retry_workflow_run``: the new attempt and what is left to do."""

    run: WorkflowRun
    """The new attempt, RUNNING, linked to the original by ``retry_of_run_id``."""
    carried_over: list[TaskRun]
    """Completed task runs carried into the new attempt with their results."""
    pending_task_ids: list[str]
    """Tasks still to do: failed, interrupted or never started."""
    carried_over_truncated: bool = False
    """True when ``carried_over`` holds only the first: all would not fit in one response
    (every one was carried over; ``list_task_runs(run_id=...)`` lists them)."""
    pending_task_ids_truncated: bool = False
    """True when ``pending_task_ids`` holds only the first: all would not fit."""

    @classmethod
    def from_proto(cls, msg: recovery_pb2.RetryWorkflowRunResponse) -> RetriedRun:
        return cls(
            run=WorkflowRun.from_proto(msg.run),
            carried_over=[TaskRun.from_proto(t) for t in msg.carried_over],
            pending_task_ids=list(msg.pending_task_ids),
            carried_over_truncated=msg.carried_over_truncated,
            pending_task_ids_truncated=msg.pending_task_ids_truncated,
        )


@dataclass(frozen=True, slots=True)
class CompensationStep:
    """One compensation of a failed run: undo what a completed task did."""

    task_run_id: str
    task_id: str
    compensation: Any
    """The descriptor recorded when the task completed (any JSON value)."""
    complete_time: datetime | None
    done: bool
    done_time: datetime | None

    @classmethod
    def from_proto(cls, msg: recovery_pb2.CompensationStep) -> CompensationStep:
        return cls(
            task_run_id=msg.task_run_id,
            task_id=msg.task_id,
            compensation=decode_json(msg.compensation_json),
            complete_time=to_datetime(msg, "complete_time"),
            done=msg.done,
            done_time=to_datetime(msg, "done_time"),
        )


@dataclass(frozen=True, slots=True)
class PrunedCheckpoints:
    """The answer of ``prune_checkpoints``."""

    deleted: list[Checkpoint]
    """Checkpoints deleted (or that would be, on a dry run)."""
    freed_bytes: int
    deleted_count: int = 0
    """How many were deleted; more than ``deleted`` lists when ``deleted_truncated``."""
    deleted_truncated: bool = False
    """True when ``deleted`` lists only some: all would not fit in one response."""

    @classmethod
    def from_proto(cls, msg: recovery_pb2.PruneCheckpointsResponse) -> PrunedCheckpoints:
        return cls(
            deleted=[Checkpoint.from_proto(c) for c in msg.deleted],
            freed_bytes=msg.freed_bytes,
            deleted_count=msg.deleted_count or len(msg.deleted),  # 0 from older servers
            deleted_truncated=msg.deleted_truncated,
        )


@dataclass(frozen=True, slots=True)
class ArchivedRuns:
    """The answer of ``archive_runs``: what went into the archive (or would, on a dry run)."""

    archive_url: str
    runs: int
    task_runs: int
    events: int

    @classmethod
    def from_proto(cls, msg: recovery_pb2.ArchiveRunsResponse) -> ArchivedRuns:
        return cls(
            archive_url=msg.archive_url, runs=msg.runs, task_runs=msg.task_runs, events=msg.events
        )


@dataclass(frozen=True, slots=True)
class CollectedGarbage:
    """The answer of ``collect_garbage``."""

    deleted_blobs: list[str]
    """Keys of orphan blobs deleted (or that would be, on a dry run)."""
    freed_bytes: int
    deleted_count: int = 0
    """How many were deleted; more than ``deleted_blobs`` lists when ``deleted_truncated``."""
    deleted_truncated: bool = False
    """True when ``deleted_blobs`` lists only some: all would not fit in one response."""

    @classmethod
    def from_proto(cls, msg: recovery_pb2.CollectGarbageResponse) -> CollectedGarbage:
        return cls(
            deleted_blobs=list(msg.deleted_blobs),
            freed_bytes=msg.freed_bytes,
            deleted_count=msg.deleted_count or len(msg.deleted_blobs),  # 0 from older servers
            deleted_truncated=msg.deleted_truncated,
        )
