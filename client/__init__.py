"""Python client for Stateward: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

::

    from stateward.client import Client

    with Client.connect("127.0.0.1:50051") as client:
        client.create_agent("a1", "planner", config={"model": "m"})
        for agent in client.iter_agents(status="ACTIVE"):
            print(agent.agent_id, agent.status)
        client.update_state("a1", lambda doc: doc.update(turns=doc.get("turns", 0) + 1))
        run = client.start_workflow_run("daily", agent_id="a1")
        with client.track_task(run.run_id, "summarize", "a1", heartbeat_timeout=30) as task:
            task.log("chunk_done", n=1)
            task.result = {"summary": "..."}
        for event in client.subscribe(agent_id="a1"):  # resumes by itself after restarts
            print(event.sequence, event.type)

Results are the frozen dataclasses of ``stateward.client.models``; failures
raise the errors of ``stateward.client.errors`` (their tree is drawn there).
This package needs only grpcio, grpcio-status and protobuf: it never imports
the server.
"""

from ._operation import UNSET
from ._options import Backoff, ClientOptions, RetryPolicy, TLSConfig
from ._run_tracking import AsyncRunTracker, RunTracker, RunTrackOptions
from ._tracking import ERROR_KINDS, AsyncTaskTracker, CancelRequested, TaskTracker, TrackOptions
from .aio import AsyncClient
from .errors import (
    AlreadyExists,
    Conflict,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
    ResourceExhausted,
    ServerError,
    StatewardError,
    TransportError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    UsageError,
)
from .models import (
    Agent,
    AgentStatus,
    AppendedEvents,
    ArchivedRuns,
    BatchStates,
    Checkpoint,
    CollectedGarbage,
    CompensationStep,
    ErrorDetail,
    ErrorKind,
    Event,
    Heartbeat,
    MigrationFailure,
    MigrationPage,
    NewEvent,
    Page,
    PrunedCheckpoints,
    RecoveryPlan,
    RecoveryStrategy,
    RestoredCheckpoint,
    RetriedRun,
    RunStatus,
    StateVersion,
    TaskRun,
    TaskStatus,
    Transition,
    WorkflowRun,
)
from .sync import Client

__all__ = [
    "ERROR_KINDS",
    "UNSET",
    "Agent",
    "AgentStatus",
    "AlreadyExists",
    "AppendedEvents",
    "ArchivedRuns",
    "AsyncClient",
    "AsyncRunTracker",
    "AsyncTaskTracker",
    "Backoff",
    "BatchStates",
    "CancelRequested",
    "Checkpoint",
    "Client",
    "ClientOptions",
    "CollectedGarbage",
    "CompensationStep",
    "Conflict",
    "DataLoss",
    "DeadlineExceeded",
    "ErrorDetail",
    "ErrorKind",
    "Event",
    "FailedPrecondition",
    "FieldViolation",
    "Heartbeat",
    "Internal",
    "InvalidArgument",
    "InvalidTransition",
    "MigrationFailure",
    "MigrationPage",
    "NewEvent",
    "NotFound",
    "Page",
    "PermissionDenied",
    "PreconditionViolation",
    "PrunedCheckpoints",
    "RecoveryPlan",
    "RecoveryStrategy",
    "ResourceExhausted",
    "RestoredCheckpoint",
    "RetriedRun",
    "RetryPolicy",
    "RunStatus",
    "RunTrackOptions",
    "RunTracker",
    "ServerError",
    "StateVersion",
    "StatewardError",
    "TLSConfig",
    "TaskRun",
    "TaskStatus",
    "TaskTracker",
    "TrackOptions",
    "Transition",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UsageError",
    "WorkflowRun",
]
