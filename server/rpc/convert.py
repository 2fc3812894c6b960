"""Storage records to protobuf messages and back (times, errors, enums)."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from stateward.server.domain.errors import InvalidArgument
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


# The ranges google.protobuf defines: values outside them would overflow 64-bit SQL integers.
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_DURATION_SECONDS = 315_576_000_000  # about 10,000 years


def micros(ts: timestamp_pb2.Timestamp, field: str = "timestamp") -> int:
    if not (
        MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS
        and 0 <= ts.nanos <= 999_999_999
    ):
        raise InvalidArgument.one(
            field, "must be a valid timestamp between 0001-01-01 and 9999-12-31 UTC"
        )
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def duration_micros(d: duration_pb2.Duration, field: str = "duration") -> int:
    if not (
        -MAX_DURATION_SECONDS <= d.seconds <= MAX_DURATION_SECONDS
        and -999_999_999 <= d.nanos <= 999_999_999
    ):
        raise InvalidArgument.one(
            field, f"must be a valid duration of at most {MAX_DURATION_SECONDS} seconds"
        )
    # Rounded away from zero: a positive duration under a microsecond stays positive.
    nanos = d.seconds * 1_000_000_000 + d.nanos
    micros = -(-abs(nanos) // 1000)
    return micros if nanos >= 0 else -micros


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
