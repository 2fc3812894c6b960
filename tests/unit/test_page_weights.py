"""List pages are cut by record weights (server/domain/paging.py): each weight must be an
upper bound of what the record costs in its list response, for the largest records the
server accepts: 128-character ids, 64 labels of 256 characters in 4-byte UTF-8, error
messages of 4,096 characters, timestamps everywhere."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from stateward.server.domain import paging
from stateward.server.rpc import convert
from stateward.server.servicers import execution as exe
from stateward.server.servicers.recovery import checkpoint, compensation_step
from stateward.server.servicers.state import state_version
from stateward.server.services import weights
from stateward.storage.checkpoints import CheckpointRecord
from stateward.storage.records import AgentRecord, ErrorRecord, EventRecord, TransitionRecord
from stateward.storage.runs import RunRecord, TaskRunRecord
from stateward.storage.states import StateRecord

ID = "i" * 128
TEXT = "\U0001f600" * 256  # 1 KiB of UTF-8 in 256 characters
LABELS = {f"{k:03d}" + TEXT[3:]: TEXT for k in range(64)}
BIG = 2**62  # every timestamp and 64-bit number at its longest varint
ATTEMPT = 2**31 - 1  # an int32
ERROR = ErrorRecord("\U0001f600" * 4096, 6, True, b"{}" * 100, BIG)
DOC = b'{"x": 1}'


TASK_RUN = TaskRunRecord(
    "ns",
    ID,
    ID,
    ID,
    ID,
    ATTEMPT,
    "COMPLETED",
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
)


def framed(message: Any) -> int:
    """The message's size as one element of a repeated field (tag and length too)."""
    return message.ByteSize() + 1 + 5


CASES = [
    (
        weights.agent,
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
        weights.transition,
        convert.transition,
        TransitionRecord(BIG, "ns", ID, "ACTIVE", "PAUSED", TEXT * 4, ID, BIG, BIG),
    ),
    (
        weights.run,
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
    (weights.task_run, exe.task_run, TASK_RUN),
    (weights.state, state_version, StateRecord("ns", ID, BIG, DOC, ATTEMPT, BIG, BIG, BIG)),
    (weights.compensation_step, compensation_step, TASK_RUN),
    (
        weights.event,
        exe.event,
        EventRecord("ns", BIG, "t" * 128, DOC * 100, BIG, ID, ID, ID, BIG),
    ),
    (
        weights.manifest,
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


def test_trim_keeps_what_fits_in_order_and_may_keep_nothing() -> None:
    assert weights.trim([3, 4, 5], lambda n: n, 8) == ([3, 4], 1)
    assert weights.trim([3, 4, 5], lambda n: n, 12) == ([3, 4, 5], 0)
    assert weights.trim([9, 1], lambda n: n, 8) == ([], 8)  # order is kept: no skipping


def test_capped_lists_a_prefix_and_counts_everything() -> None:
    capped = weights.Capped(lambda n: n, 8)
    for n in (3, 4, 5, 1):
        capped.add(n)
    assert (capped.items, capped.count, capped.truncated) == ([3, 4], 4, True)


def test_a_retried_event_stays_within_the_event_data_limit() -> None:
    import json

    from stateward.server.domain.runs import MAX_EVENT_DATA
    from stateward.server.services.recovery import RetryResult, _retried_data

    run = CASES[2][2]  # the largest run record
    carried = [replace(TASK_RUN, task_id=f"carried-{n}-" + "\u00e9" * 100) for n in range(400)]
    pending = [f'pending-{n}-"quoted"' + "p" * 100 for n in range(1000)]
    data = _retried_data(run, RetryResult(run, carried, pending))
    assert len(data) <= MAX_EVENT_DATA
    parsed = json.loads(data)
    assert (parsed["carried_over_count"], parsed["pending_task_count"]) == (400, 1000)
    assert parsed["carried_over"] == [t.task_id for t in carried[: len(parsed["carried_over"])]]
    assert parsed["pending_task_ids"] == pending[: len(parsed["pending_task_ids"])]

    small = json.loads(_retried_data(run, RetryResult(run, carried[:2], pending[:3])))
    assert small["carried_over"] == [t.task_id for t in carried[:2]]
    assert small["pending_task_ids"] == pending[:3]
