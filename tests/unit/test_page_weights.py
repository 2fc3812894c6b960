"""List pages are cut by record weights (server/domain/paging.py): each weight must be an
upper bound of what the record costs in its list response, for the largest records the
server accepts: 128-character ids, 64 labels of 256 characters in 4-byte UTF-8, error
messages of 4,096 characters, timestamps everywhere."""

from __future__ import annotations

from typing import Any

import pytest

from stateward.server.domain import paging
from stateward.server.rpc import convert
from stateward.server.servicers import execution as exe
from stateward.server.servicers.recovery import checkpoint
from stateward.server.services import checkpoints, execution, lifecycle
from stateward.storage.checkpoints import CheckpointRecord
from stateward.storage.records import AgentRecord, ErrorRecord, EventRecord, TransitionRecord
from stateward.storage.runs import RunRecord, TaskRunRecord

ID = "i" * 128
TEXT = "\U0001f600" * 256  # 1 KiB of UTF-8 in 256 characters
LABELS = {f"{k:03d}" + TEXT[3:]: TEXT for k in range(64)}
BIG = 2**62  # every timestamp and 64-bit number at its longest varint
ATTEMPT = 2**31 - 1  # an int32
ERROR = ErrorRecord("\U0001f600" * 4096, 6, True, b"{}" * 100, BIG)
DOC = b'{"x": 1}'


def framed(message: Any) -> int:
    """The message's size as one element of a repeated field (tag and length too)."""
    return message.ByteSize() + 1 + 5


CASES = [
    (
        lifecycle._agent_bytes,
        convert.agent,
        AgentRecord(
            "ns",
            ID,
            TEXT[:128],
            DOC,
            LABELS,
            "ERROR",
            BIG,
            BIG,
            BIG,
            BIG,
            BIG,
            BIG,
            BIG,
            BIG,
            BIG,
            ERROR,
        ),
    ),
    (
        lifecycle._transition_bytes,
        convert.transition,
        TransitionRecord(BIG, "ns", ID, "ACTIVE", "PAUSED", TEXT * 4, ID, BIG, BIG),
    ),
    (
        execution._run_bytes,
        exe.workflow_run,
        RunRecord(
            "ns",
            ID,
            TEXT[:128],
            ID,
            "FAILED",
            DOC,
            LABELS,
            ATTEMPT,
            ID,
            BIG,
            BIG,
            BIG,
            BIG,
            DOC,
            ERROR,
            ID,
            True,
        ),
    ),
    (
        execution._task_bytes,
        exe.task_run,
        TaskRunRecord(
            "ns",
            ID,
            ID,
            ID,
            ID,
            ATTEMPT,
            "FAILED",
            DOC,
            BIG,
            BIG,
            BIG,
            BIG,
            BIG,
            BIG,
            BIG,
            DOC,
            ERROR,
            DOC,
            DOC,
            BIG,
            ID,
            True,
        ),
    ),
    (
        execution._event_bytes,
        exe.event,
        EventRecord("ns", BIG, "t" * 128, DOC * 100, BIG, ID, ID, ID, BIG),
    ),
    (
        checkpoints._manifest_bytes,
        checkpoint,
        CheckpointRecord("ns", ID, ID, BIG, BIG, BIG, "f" * 64, "zstd", "k", BIG, LABELS, DOC),
    ),
]


@pytest.mark.parametrize(
    ("weigh", "encode", "record"), CASES, ids=lambda c: getattr(c, "__name__", "")
)
def test_a_weight_bounds_the_encoded_record(weigh: Any, encode: Any, record: Any) -> None:
    if encode is checkpoint:
        message = encode(record, with_payload=True)
    else:
        message = encode(record)
    assert weigh(record) >= framed(message)


def test_text_is_counted_in_utf8_bytes() -> None:
    assert paging.text_bytes("abc") == paging.FIELD_BYTES + 3
    assert paging.text_bytes("\u00e9") == paging.FIELD_BYTES + 2
    assert paging.text_bytes("") == paging.text_bytes(None) == 0
