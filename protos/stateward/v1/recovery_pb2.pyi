import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from stateward.v1 import common_pb2 as _common_pb2
from stateward.v1 import execution_pb2 as _execution_pb2
from stateward.v1 import lifecycle_pb2 as _lifecycle_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecoveryStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECOVERY_STRATEGY_UNSPECIFIED: _ClassVar[RecoveryStrategy]
    RECOVERY_STRATEGY_NONE: _ClassVar[RecoveryStrategy]
    RECOVERY_STRATEGY_RETRY_WITH_LONGER_TIMEOUT: _ClassVar[RecoveryStrategy]
    RECOVERY_STRATEGY_RETRY_WITH_BACKOFF: _ClassVar[RecoveryStrategy]
    RECOVERY_STRATEGY_RESTORE_CHECKPOINT: _ClassVar[RecoveryStrategy]
    RECOVERY_STRATEGY_MANUAL_INTERVENTION: _ClassVar[RecoveryStrategy]
RECOVERY_STRATEGY_UNSPECIFIED: RecoveryStrategy
RECOVERY_STRATEGY_NONE: RecoveryStrategy
RECOVERY_STRATEGY_RETRY_WITH_LONGER_TIMEOUT: RecoveryStrategy
RECOVERY_STRATEGY_RETRY_WITH_BACKOFF: RecoveryStrategy
RECOVERY_STRATEGY_RESTORE_CHECKPOINT: RecoveryStrategy
RECOVERY_STRATEGY_MANUAL_INTERVENTION: RecoveryStrategy

class Checkpoint(_message.Message):
    __slots__ = ("checkpoint_id", "agent_id", "state_version", "size_bytes", "sha256", "compression", "labels", "create_time", "payload")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    agent_id: str
    state_version: int
    size_bytes: int
    sha256: str
    compression: str
    labels: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    payload: bytes
    def __init__(self, checkpoint_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., state_version: _Optional[int] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., compression: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payload: _Optional[bytes] = ...) -> None: ...

class CreateCheckpointRequest(_message.Message):
    __slots__ = ("agent_id", "payload", "labels", "request_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    payload: bytes
    labels: _containers.ScalarMap[str, str]
    request_id: str
    def __init__(self, agent_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., labels: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ...) -> None: ...

class UploadCheckpointMetadata(_message.Message):
    __slots__ = ("agent_id", "labels", "request_id", "sha256")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    labels: _containers.ScalarMap[str, str]
    request_id: str
    sha256: str
    def __init__(self, agent_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., request_id: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadCheckpointRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: UploadCheckpointMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[UploadCheckpointMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("checkpoint_id",)
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    def __init__(self, checkpoint_id: _Optional[str] = ...) -> None: ...

class GetCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("agent_id", "page_size", "page_token", "labels", "include_payloads")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    page_size: int
    page_token: str
    labels: _containers.ScalarMap[str, str]
    include_payloads: bool
    def __init__(self, agent_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., include_payloads: _Optional[bool] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints", "next_page_token")
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    next_page_token: str
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BatchCreateCheckpointsRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[CreateCheckpointRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[CreateCheckpointRequest, _Mapping]]] = ...) -> None: ...

class BatchCreateCheckpointsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CreateCheckpointResult]
    def __init__(self, results: _Optional[_Iterable[_Union[CreateCheckpointResult, _Mapping]]] = ...) -> None: ...

class CreateCheckpointResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: CreateCheckpointResponse
    error: _common_pb2.ItemStatus
    def __init__(self, response: _Optional[_Union[CreateCheckpointResponse, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ItemStatus, _Mapping]] = ...) -> None: ...

class BatchListCheckpointsRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ListCheckpointsRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ListCheckpointsRequest, _Mapping]]] = ...) -> None: ...

class BatchListCheckpointsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ListCheckpointsResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ListCheckpointsResult, _Mapping]]] = ...) -> None: ...

class ListCheckpointsResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: ListCheckpointsResponse
    error: _common_pb2.ItemStatus
    def __init__(self, response: _Optional[_Union[ListCheckpointsResponse, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ItemStatus, _Mapping]] = ...) -> None: ...

class DownloadCheckpointRequest(_message.Message):
    __slots__ = ("checkpoint_id",)
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    def __init__(self, checkpoint_id: _Optional[str] = ...) -> None: ...

class DownloadCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "chunk")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    chunk: bytes
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class DeleteCheckpointRequest(_message.Message):
    __slots__ = ("checkpoint_id", "request_id")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    request_id: str
    def __init__(self, checkpoint_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint_id",)
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    def __init__(self, checkpoint_id: _Optional[str] = ...) -> None: ...

class RestoreCheckpointRequest(_message.Message):
    __slots__ = ("checkpoint_id", "expected_version", "reinitialize", "request_id")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REINITIALIZE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    expected_version: int
    reinitialize: bool
    request_id: str
    def __init__(self, checkpoint_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., reinitialize: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class RestoreCheckpointResponse(_message.Message):
    __slots__ = ("state_version", "agent")
    STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    state_version: int
    agent: _lifecycle_pb2.Agent
    def __init__(self, state_version: _Optional[int] = ..., agent: _Optional[_Union[_lifecycle_pb2.Agent, _Mapping]] = ...) -> None: ...

class RecoverAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class RecoveryPlan(_message.Message):
    __slots__ = ("agent_id", "agent_status", "last_good_state_version", "last_failure", "failed_task_runs", "checkpoint", "strategy", "suggested_timeout", "retry_delay", "explanation", "failed_task_runs_truncated")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_GOOD_STATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    FAILED_TASK_RUNS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    FAILED_TASK_RUNS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    agent_status: _lifecycle_pb2.AgentStatus
    last_good_state_version: int
    last_failure: _execution_pb2.TaskRun
    failed_task_runs: _containers.RepeatedCompositeFieldContainer[_execution_pb2.TaskRun]
    checkpoint: Checkpoint
    strategy: RecoveryStrategy
    suggested_timeout: _duration_pb2.Duration
    retry_delay: _duration_pb2.Duration
    explanation: str
    failed_task_runs_truncated: bool
    def __init__(self, agent_id: _Optional[str] = ..., agent_status: _Optional[_Union[_lifecycle_pb2.AgentStatus, str]] = ..., last_good_state_version: _Optional[int] = ..., last_failure: _Optional[_Union[_execution_pb2.TaskRun, _Mapping]] = ..., failed_task_runs: _Optional[_Iterable[_Union[_execution_pb2.TaskRun, _Mapping]]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., strategy: _Optional[_Union[RecoveryStrategy, str]] = ..., suggested_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., explanation: _Optional[str] = ..., failed_task_runs_truncated: _Optional[bool] = ...) -> None: ...

class RecoverAgentResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: RecoveryPlan
    def __init__(self, plan: _Optional[_Union[RecoveryPlan, _Mapping]] = ...) -> None: ...

class RetryWorkflowRunRequest(_message.Message):
    __slots__ = ("run_id", "request_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    request_id: str
    def __init__(self, run_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RetryWorkflowRunResponse(_message.Message):
    __slots__ = ("run", "carried_over", "pending_task_ids", "carried_over_truncated", "pending_task_ids_truncated")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CARRIED_OVER_FIELD_NUMBER: _ClassVar[int]
    PENDING_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    CARRIED_OVER_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    PENDING_TASK_IDS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    run: _execution_pb2.WorkflowRun
    carried_over: _containers.RepeatedCompositeFieldContainer[_execution_pb2.TaskRun]
    pending_task_ids: _containers.RepeatedScalarFieldContainer[str]
    carried_over_truncated: bool
    pending_task_ids_truncated: bool
    def __init__(self, run: _Optional[_Union[_execution_pb2.WorkflowRun, _Mapping]] = ..., carried_over: _Optional[_Iterable[_Union[_execution_pb2.TaskRun, _Mapping]]] = ..., pending_task_ids: _Optional[_Iterable[str]] = ..., carried_over_truncated: _Optional[bool] = ..., pending_task_ids_truncated: _Optional[bool] = ...) -> None: ...

class CompensationStep(_message.Message):
    __slots__ = ("task_run_id", "task_id", "compensation_json", "complete_time", "done", "done_time")
    TASK_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_JSON_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    DONE_TIME_FIELD_NUMBER: _ClassVar[int]
    task_run_id: str
    task_id: str
    compensation_json: bytes
    complete_time: _timestamp_pb2.Timestamp
    done: bool
    done_time: _timestamp_pb2.Timestamp
    def __init__(self, task_run_id: _Optional[str] = ..., task_id: _Optional[str] = ..., compensation_json: _Optional[bytes] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., done: _Optional[bool] = ..., done_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetCompensationPlanRequest(_message.Message):
    __slots__ = ("run_id", "page_size", "page_token")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    page_size: int
    page_token: str
    def __init__(self, run_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetCompensationPlanResponse(_message.Message):
    __slots__ = ("steps", "next_page_token")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[CompensationStep]
    next_page_token: str
    def __init__(self, steps: _Optional[_Iterable[_Union[CompensationStep, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CompleteCompensationRequest(_message.Message):
    __slots__ = ("run_id", "task_run_id", "request_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    task_run_id: str
    request_id: str
    def __init__(self, run_id: _Optional[str] = ..., task_run_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CompleteCompensationResponse(_message.Message):
    __slots__ = ("step",)
    STEP_FIELD_NUMBER: _ClassVar[int]
    step: CompensationStep
    def __init__(self, step: _Optional[_Union[CompensationStep, _Mapping]] = ...) -> None: ...

class PruneCheckpointsRequest(_message.Message):
    __slots__ = ("agent_id", "keep_last", "max_age", "dry_run")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    keep_last: int
    max_age: _duration_pb2.Duration
    dry_run: bool
    def __init__(self, agent_id: _Optional[str] = ..., keep_last: _Optional[int] = ..., max_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class PruneCheckpointsResponse(_message.Message):
    __slots__ = ("deleted", "freed_bytes", "deleted_count", "deleted_truncated")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    freed_bytes: int
    deleted_count: int
    deleted_truncated: bool
    def __init__(self, deleted: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ..., freed_bytes: _Optional[int] = ..., deleted_count: _Optional[int] = ..., deleted_truncated: _Optional[bool] = ...) -> None: ...

class ArchiveRunsRequest(_message.Message):
    __slots__ = ("ended_before", "archive_url", "dry_run")
    ENDED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_URL_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ended_before: _timestamp_pb2.Timestamp
    archive_url: str
    dry_run: bool
    def __init__(self, ended_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., archive_url: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ArchiveRunsResponse(_message.Message):
    __slots__ = ("archive_url", "runs", "task_runs", "events")
    ARCHIVE_URL_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    TASK_RUNS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    archive_url: str
    runs: int
    task_runs: int
    events: int
    def __init__(self, archive_url: _Optional[str] = ..., runs: _Optional[int] = ..., task_runs: _Optional[int] = ..., events: _Optional[int] = ...) -> None: ...

class CollectGarbageRequest(_message.Message):
    __slots__ = ("grace_period", "dry_run")
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    grace_period: _duration_pb2.Duration
    dry_run: bool
    def __init__(self, grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class CollectGarbageResponse(_message.Message):
    __slots__ = ("deleted_blobs", "freed_bytes", "deleted_count", "deleted_truncated")
    DELETED_BLOBS_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    deleted_blobs: _containers.RepeatedScalarFieldContainer[str]
    freed_bytes: int
    deleted_count: int
    deleted_truncated: bool
    def __init__(self, deleted_blobs: _Optional[_Iterable[str]] = ..., freed_bytes: _Optional[int] = ..., deleted_count: _Optional[int] = ..., deleted_truncated: _Optional[bool] = ...) -> None: ...
