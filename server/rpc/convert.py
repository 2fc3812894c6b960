"""Storage records to protobuf messages and back (times, errors, enums)."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from stateward.storage.records import AgentRecord, ErrorRecord, TransitionRecord
from stateward.v1 import common_pb2, lifecycle_pb2

AGENT_STATUS = {
    name: lifecycle_pb2.AgentStatus.Value(f"AGENT_STATUS_{name}")
    for name in ("CREATED", "INITIALIZED", "ACTIVE", "PAUSED", "TERMINATED", "ERROR")
}
AGENT_STATUS_NAME = {number: name for name, number in AGENT_STATUS.items()}


def timestamp(us: int | None) -> timestamp_pb2.Timestamp | None:
    if us is None:
        return None
    return timestamp_pb2.Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def micros(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def duration_micros(d: duration_pb2.Duration) -> int:
    return d.seconds * 1_000_000 + d.nanos // 1000


def duration(us: int | None) -> duration_pb2.Duration | None:
    if us is None:
        return None
    return duration_pb2.Duration(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def error_detail(error: ErrorRecord | None) -> common_pb2.ErrorDetail | None:
    if error is None:
        return None
    return common_pb2.ErrorDetail(
        message=error.message,
        kind=error.kind,  # type: ignore[arg-type]
        retryable=error.retryable,
        details_json=error.details,
        time=timestamp(error.at),
    )


def error_record(detail: common_pb2.ErrorDetail) -> ErrorRecord:
    """A client-reported error; the server stamps its time when it commits."""
    return ErrorRecord(detail.message, int(detail.kind), detail.retryable, detail.details_json, 0)


def agent(record: AgentRecord) -> lifecycle_pb2.Agent:
    return lifecycle_pb2.Agent(
        agent_id=record.agent_id,
        type=record.type,
        config_json=record.config,
        labels=record.labels,
        status=AGENT_STATUS[record.status],  # type: ignore[arg-type]
        last_error=error_detail(record.error),
        etag=record.etag,
        state_version=record.state_version,
        create_time=timestamp(record.created_at),
        update_time=timestamp(record.updated_at),
        initialize_time=timestamp(record.initialized_at),
        activate_time=timestamp(record.activated_at),
        pause_time=timestamp(record.paused_at),
        terminate_time=timestamp(record.terminated_at),
    )


def transition(record: TransitionRecord) -> lifecycle_pb2.Transition:
    return lifecycle_pb2.Transition(
        transition_id=record.id,
        agent_id=record.agent_id,
        from_status=AGENT_STATUS.get(record.from_status or "", 0),  # type: ignore[arg-type]
        to_status=AGENT_STATUS[record.to_status],  # type: ignore[arg-type]
        reason=record.reason,
        request_id=record.request_id,
        create_time=timestamp(record.created_at),
        event_sequence=record.event_sequence,
    )
