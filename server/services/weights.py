"""What each record costs in a response, at most: the weights that keep answers under the
message limit (see ``paging.RECORD_BYTES``).

List pages stop when the next record's weight would not fit (``paging.fitting``); answers
that are not paged (a recovery plan, a retry, a prune) trim their lists with ``trim`` or
``Capped`` and say so. A page holds at least one record, so a record must fit in one
answer alone: the writes that make a record bigger check that first (``require_fits``).
tests/unit/test_page_weights.py checks each weight against the real encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stateward.server.domain import paging
from stateward.server.domain.errors import RecordTooLarge
from stateward.server.domain.validation import MAX_ID, MAX_MESSAGE
from stateward.storage.checkpoints import CheckpointRecord
from stateward.storage.records import AgentRecord, ErrorRecord, EventRecord, TransitionRecord
from stateward.storage.runs import RunRecord, TaskRunRecord
from stateward.storage.states import StateRecord

T = TypeVar("T")

# A retry copies a run (its input and labels) or a completed task run with one id more
# (retry_of_run_id or carried_from): room for two ids keeps a copy within the budget its
# original was checked against.
COPY_BYTES = 2 * (paging.FIELD_BYTES + MAX_ID)

# Room a record keeps, until it ends, for the write that ends it: an error whose message
# has MAX_MESSAGE characters of up to 4 bytes each and no details (the most the sweeper or
# a restart writes, too), or a result of ``null``. So whatever was accepted can be ended.
END_BYTES = paging.RECORD_BYTES + 2 * paging.FIELD_BYTES + 4 * MAX_MESSAGE


def require_fits(what: str, weight: int, budget: int) -> None:
    """Refuse a write that would make a record weigh more than one answer's ``budget``:
    the record could then be neither read nor listed."""
    if weight > budget:
        raise RecordTooLarge(
            f"{what} would take {weight} bytes in an answer, more than the {budget} bytes one "
            "answer carries under this server's max_message_bytes; nothing was written. Keep "
            "large documents in checkpoints and store a reference, or raise max_message_bytes",
            metadata={"record_bytes": str(weight), "answer_bytes": str(budget)},
        )


def error(e: ErrorRecord | None) -> int:
    if e is None:
        return 0
    return paging.RECORD_BYTES + paging.text_bytes(e.message) + paging.blob_bytes(e.details)


def agent(r: AgentRecord) -> int:
    return (
        paging.RECORD_BYTES
        + paging.text_bytes(r.agent_id)
        + paging.text_bytes(r.type)
        + paging.blob_bytes(r.config)
        + paging.labels_bytes(r.labels)
        + error(r.error)
    )


def transition(r: TransitionRecord) -> int:
    texts = (r.agent_id, r.reason, r.request_id)
    return paging.RECORD_BYTES + sum(map(paging.text_bytes, texts))


def run(r: RunRecord) -> int:
    texts = (r.run_id, r.workflow_name, r.agent_id, r.root_run_id, r.retry_of_run_id)
    return (
        paging.RECORD_BYTES
        + sum(map(paging.text_bytes, texts))
        + paging.blob_bytes(r.input)
        + paging.blob_bytes(r.result)
        + paging.labels_bytes(r.labels)
        + error(r.error)
    )


def task_run(r: TaskRunRecord) -> int:
    texts = (r.task_run_id, r.run_id, r.task_id, r.agent_id, r.carried_from)
    documents = (r.input, r.result, r.progress, r.compensation)
    return (
        paging.RECORD_BYTES
        + sum(map(paging.text_bytes, texts))
        + sum(map(paging.blob_bytes, documents))
        + error(r.error)
    )


def compensation_step(r: TaskRunRecord) -> int:
    texts = (r.task_run_id, r.task_id)
    return (
        paging.RECORD_BYTES + sum(map(paging.text_bytes, texts)) + paging.blob_bytes(r.compensation)
    )


def state(r: StateRecord) -> int:
    return paging.RECORD_BYTES + paging.text_bytes(r.agent_id) + paging.blob_bytes(r.document)


STATE_BYTES = paging.RECORD_BYTES + 2 * paging.FIELD_BYTES + MAX_ID
"""The most a state version weighs besides its document's bytes."""


def event(r: EventRecord) -> int:
    texts = (r.type, r.agent_id, r.run_id, r.task_run_id)
    return paging.RECORD_BYTES + sum(map(paging.text_bytes, texts)) + paging.blob_bytes(r.data)


def manifest(r: CheckpointRecord) -> int:
    texts = (r.checkpoint_id, r.agent_id, r.sha256, r.compression)
    return (
        paging.RECORD_BYTES
        + sum(map(paging.text_bytes, texts))
        + paging.blob_bytes(r.payload)
        + paging.labels_bytes(r.labels)
    )


def trim(items: Sequence[T], weigh: Callable[[T], int], budget: int) -> tuple[list[T], int]:
    """The first of ``items`` that fit in ``budget`` bytes (possibly none), and the bytes
    left. For answers that are not paged: the caller reports that the list was cut."""
    kept: list[T] = []
    for item in items:
        cost = weigh(item)
        if cost > budget:
            break
        budget -= cost
        kept.append(item)
    return kept, budget


@dataclass(slots=True)
class Capped(Generic[T]):
    """A list an answer carries, kept within ``room`` bytes; ``count`` counts every item
    added, listed or not. Once one item does not fit, no later one is listed, so the list
    is a prefix of what was added."""

    weigh: Callable[[T], int]
    room: int
    items: list[T] = field(default_factory=list)
    count: int = 0
    truncated: bool = False

    def add(self, item: T) -> None:
        self.count += 1
        if self.truncated:
            return
        cost = self.weigh(item)
        if cost > self.room:
            self.truncated = True
            return
        self.room -= cost
        self.items.append(item)
