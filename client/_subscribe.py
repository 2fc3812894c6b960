"""Resuming subscriptions: the bookkeeping ``subscribe`` shares between both clients.

A subscription stream ends when the server restarts (gracefully: the stream just
ends) or the connection drops (UNAVAILABLE). ``Resumer`` remembers the last
sequence delivered and builds the next SubscribeEvents request from it, so the
caller sees one unbroken iterator: every event once, in sequence order.

A keepalive's head is the stream's watermark (every matching event up to it was
sent before it), so the cursor moves to it too: a filtered subscription that
resumes after a quiet spell does not re-read the events that did not match. The
one inexact case: a ``from_head`` subscription that breaks before its first event
or keepalive has no sequence to resume from, and starts from the head again
(events committed while it was disconnected are then not seen).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from stateward.v1 import execution_pb2 as pb

from ._codec import to_duration
from ._operation import EXECUTION, Prepared, Rpc
from ._options import Backoff, MetadataLike
from .errors import StatewardError, TransportError, UsageError
from .models import Event

SUBSCRIBE = Rpc(EXECUTION, "SubscribeEvents")

RECONNECT = Backoff(initial=0.05, maximum=2.0)
"""Default waits between reconnections; reset by every message received."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """An idle stream's keepalive: its watermark (every matching event up to ``head``
    was sent before it)."""

    head: int


def _item(response: pb.SubscribeEventsResponse) -> Event | Keepalive | None:
    if response.HasField("event"):
        return Event.from_proto(response.event)
    return Keepalive(response.keepalive.head_sequence)


class Resumer:
    """The cursor of one logical subscription across its streams."""

    def __init__(
        self,
        *,
        agent_id: str,
        run_id: str,
        task_run_id: str,
        types: Iterable[str],
        after_sequence: int,
        from_head: bool,
        keepalive_interval: timedelta | float | None,
        reconnect: Backoff | None,
        metadata: MetadataLike,
    ) -> None:
        if from_head and after_sequence:
            raise UsageError("pass after_sequence or from_head, not both")
        self.filter = pb.EventFilter(
            agent_id=agent_id, run_id=run_id, task_run_id=task_run_id, types=list(types)
        )
        self.position = after_sequence
        """The last sequence delivered (or known to hold nothing more for us)."""
        self.from_head = from_head
        self.keepalive = to_duration(keepalive_interval) if keepalive_interval else None
        self.reconnect = reconnect or RECONNECT
        self.metadata = metadata
        self.failures = 0
        """Streams in a row that failed without delivering anything."""

    def prepared(self) -> Prepared[Event | Keepalive | None]:
        """The SubscribeEvents call that continues from the cursor."""
        request = pb.SubscribeEventsRequest(
            filter=self.filter,
            after_sequence=0 if self.from_head else self.position,
            from_head=self.from_head,
            keepalive_interval=self.keepalive,
        )
        return Prepared(request, _item, None, None, self.metadata)

    def accept(self, item: Event | Keepalive) -> Event | None:
        """The event to hand to the caller, or None (keepalive, or already delivered)."""
        self.failures = 0
        if isinstance(item, Keepalive):
            if self.from_head or item.head > self.position:
                self.position, self.from_head = item.head, False
            return None
        if item.sequence <= self.position and not self.from_head:
            return None  # never hand out an event twice, whatever the stream does
        self.position, self.from_head = item.sequence, False
        return item

    def retry_delay(self, error: StatewardError | None) -> float:
        """Seconds to wait before resubscribing after the stream ended with ``error``
        (None: it ended cleanly, as on a server restart). Re-raises errors that a new
        stream would only repeat (bad filter, permission denied, ...)."""
        if error is not None and not isinstance(error, TransportError):
            raise error
        self.failures += 1
        return self.reconnect.delay(self.failures)
