"""Python client for Stateward: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

::

    from stateward.client import Client

    with Client.connect("127.0.0.1:50051") as client:
        client.create_agent("a1", "planner", config={"model": "m"})
        for agent in client.iter_agents(status="ACTIVE"):
            print(agent.agent_id, agent.status)

Results are the frozen dataclasses of ``stateward.client.models``; failures
raise the errors of ``stateward.client.errors`` (their tree is drawn there).
This package needs only grpcio, grpcio-status and protobuf: it never imports
the server.
"""

from ._operation import UNSET
from ._options import ClientOptions, RetryPolicy, TLSConfig
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
    BatchStates,
    Checkpoint,
    ErrorDetail,
    ErrorKind,
    Event,
    Heartbeat,
    NewEvent,
    Page,
    RecoveryPlan,
    RecoveryStrategy,
    RestoredCheckpoint,
    RunStatus,
    StateVersion,
    TaskRun,
    TaskStatus,
    Transition,
    WorkflowRun,
)
from .sync import Client

__all__ = [
    "UNSET",
    "Agent",
    "AgentStatus",
    "AlreadyExists",
    "AppendedEvents",
    "AsyncClient",
    "BatchStates",
    "Checkpoint",
    "Client",
    "ClientOptions",
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
    "NewEvent",
    "NotFound",
    "Page",
    "PermissionDenied",
    "PreconditionViolation",
    "RecoveryPlan",
    "RecoveryStrategy",
    "ResourceExhausted",
    "RestoredCheckpoint",
    "RetryPolicy",
    "RunStatus",
    "ServerError",
    "StateVersion",
    "StatewardError",
    "TLSConfig",
    "TaskRun",
    "TaskStatus",
    "Transition",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UsageError",
    "WorkflowRun",
]
