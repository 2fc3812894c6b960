"""Pure conversions between Python values and their wire forms.

JSON documents travel as UTF-8 text in ``bytes`` fields (``*_json``): text keeps
integers beyond 2^53 exact, so ``json.loads`` gives back the very ``int`` that
was sent. Times are ``google.protobuf.Timestamp`` (unset means "never") and
durations ``google.protobuf.Duration``; in Python they are timezone-aware UTC
``datetime`` and ``timedelta``, or ``None`` when unset.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from .errors import UsageError

E = TypeVar("E", bound=StrEnum)


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, the form every ``*_json`` field expects."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def encode_json_or_empty(value: Any) -> bytes:
    """Like :func:`encode_json`, but ``None`` becomes the empty field (the server's default)."""
    return b"" if value is None else encode_json(value)


def decode_json(data: bytes) -> Any:
    """The JSON value in ``data``; ``None`` for an empty field."""
    return json.loads(data) if data else None


def decode_object(data: bytes) -> dict[str, Any]:
    """A JSON object field; an empty field is ``{}``."""
    value = decode_json(data)
    return value if isinstance(value, dict) else {}


def new_request_id(given: str | None = None) -> str:
    """The caller's idempotency key, or a fresh one (uuid4 hex)."""
    return given if given else uuid.uuid4().hex


# -- times ---------------------------------------------------------------------


def to_datetime(message: Any, field: str) -> datetime | None:
    """The Timestamp ``message.<field>`` as an aware UTC datetime, None when unset."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A Timestamp for ``value``; a naive datetime is taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_timedelta(message: Any, field: str) -> timedelta | None:
    """The Duration ``message.<field>`` as a timedelta, None when unset."""
    if not message.HasField(field):
        return None
    duration: duration_pb2.Duration = getattr(message, field)
    return duration.ToTimedelta()


def to_duration(value: timedelta | float) -> duration_pb2.Duration:
    """A Duration from a timedelta or a number of seconds."""
    if not isinstance(value, timedelta):
        value = timedelta(seconds=value)
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


# -- enums ---------------------------------------------------------------------
# Proto enum values are named PREFIX_NAME (AGENT_STATUS_ACTIVE); the Python
# StrEnum member is NAME (AgentStatus.ACTIVE == "ACTIVE"). Zero is UNSPECIFIED,
# which Python spells None.


def enum_from_proto(cls: type[E], proto_enum: Any, prefix: str, value: int) -> E | None:
    """The member of ``cls`` for proto enum number ``value``; None for UNSPECIFIED (0)."""
    if value == 0:
        return None
    return cls(proto_enum.Name(value).removeprefix(prefix))


def enum_to_proto(cls: type[E], prefix: str, value: E | str | None) -> str:
    """The proto enum value name (which request constructors accept) for a member or
    its name in any case; None means UNSPECIFIED. UsageError for anything else."""
    if value is None or value == "":
        return prefix + "UNSPECIFIED"
    try:
        member = cls(str(value).upper())
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise UsageError(f"unknown {cls.__name__} {value!r}; expected one of {choices}") from None
    return prefix + member.value


def str_map(labels: Mapping[str, str] | None) -> dict[str, str]:
    """A plain dict copy of a proto map (or None)."""
    return dict(labels) if labels else {}
