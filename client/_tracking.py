"""``track_task``: run a block of code as a task run, with heartbeats and batched events.

::

    with client.track_task(run_id, "fetch", "a1", heartbeat_timeout=30) as task:
        task.log("page_fetched", {"url": url})
        task.result = {"pages": 3}
    # COMPLETED with that result; an exception instead FAILS the task run and re-raises.

Everything but the waiting lives in :class:`_Tracker`, as flows (see
``_operation.py``): starting the task run, the background loop that heartbeats
and ships events, and reporting the outcome. ``TaskTracker`` runs the loop in
a thread, ``AsyncTaskTracker`` in an asyncio task.

Events go out in batches (AppendEvents, at most 1000 per call): when
``flush_every`` are waiting, when the oldest has waited ``flush_interval``
seconds, and at exit before the task run is completed, so a run's events
always precede its ``task.completed``. A batch is retried with its
idempotency key after a transport failure, so it is never appended twice.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypedDict

from stateward.v1 import execution_pb2 as pb

from ._codec import encode_json, new_request_id, to_timestamp
from ._execution import ExecutionCalls
from ._operation import EXECUTION, Call, Flow, Prepared, Rpc, Sleep
from ._options import MetadataLike
from .errors import ServerError, StatewardError, TransportError, UsageError
from .models import AppendedEvents, ErrorKind, TaskRun

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .sync import Client

APPEND = Rpc(EXECUTION, "AppendEvents")
MAX_BATCH = 1000
"""The server's limit of events per AppendEvents call."""
MAX_EVENT_DATA = 64 << 10
"""The server's limit on one event's JSON data, in bytes."""
MAX_MESSAGE = 4096
"""The server's limit on an error message, in characters."""
EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,127}")
SYSTEM_PREFIXES = ("agent.", "state.", "run.", "task.", "checkpoint.")
DEFAULT_HEARTBEAT_INTERVAL = 10.0
"""Seconds between heartbeats without a heartbeat timeout: they still bring cancellation."""
IDLE = 3600.0
RETRIES_PER_INTERVAL = 4
"""After a heartbeat lost in transit, the next one goes out this many times sooner."""

ERROR_KINDS: Mapping[type[BaseException], ErrorKind] = {
    TimeoutError: ErrorKind.TIMEOUT,
    MemoryError: ErrorKind.RESOURCE_EXHAUSTED,
    ValueError: ErrorKind.INVALID_INPUT,
}
"""How an exception escaping a tracked block is classified (by its nearest listed base
class; anything else is UNKNOWN). Extend it per call with ``error_kinds=``."""
RETRYABLE = frozenset({ErrorKind.TIMEOUT, ErrorKind.RESOURCE_EXHAUSTED})
"""Kinds reported as retryable: the recovery planner retries them with more time or later."""


class TrackOptions(TypedDict, total=False):
    """The options of ``track_task``, all keyword-only and optional."""

    input: Any
    """The task's input, any JSON value."""
    timeout: timedelta | float | None
    """The task run's overall time limit (not a call deadline); None for none."""
    heartbeat_timeout: timedelta | float | None
    """Longest allowed gap between heartbeats before the server times the task out."""
    heartbeat_interval: timedelta | float | None
    """Seconds between heartbeats; default a third of ``heartbeat_timeout`` (10 s without)."""
    flush_every: int
    """Send logged events once this many are waiting (1 to 1000; default 100)."""
    flush_interval: float
    """Send logged events once the oldest has waited this long, in seconds (default 1)."""
    error_kinds: Mapping[type[BaseException], ErrorKind]
    """Extra exception classes -> ErrorKind, on top of ``ERROR_KINDS``."""
    request_id: str | None
    """Idempotency key of the StartTaskRun call."""
    metadata: MetadataLike
    """Metadata for every call the tracker makes."""


class CancelRequested(Exception):
    """Raised by ``raise_if_cancelled``: the run was cancelled and the task should stop.

    Escaping the tracked block, it fails the task run, which the server records
    as CANCELLED because cancellation was requested.
    """


def error_kind(exc: BaseException, kinds: Mapping[type[BaseException], ErrorKind]) -> ErrorKind:
    """The kind of the nearest class of ``exc`` listed in ``kinds``; UNKNOWN if none is."""
    for cls in type(exc).__mro__:
        if cls in kinds:
            return kinds[cls]
    return ErrorKind.UNKNOWN


def describe_failure(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """The message and details a failed task run is reported with."""
    text = str(exc)
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    message = message.replace("\x00", "\\x00")[:MAX_MESSAGE]
    details = {
        "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
    }
    return message, details


def as_seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Flows:
    """What a tracker's two ways in (``InThread``, ``InTask``) drive: flows
    (``_operation.py``) to enter, to work in the background until ``_closing``, and to
    report the outcome at exit."""

    _closing: bool

    def _enter(self) -> Flow[Any]:
        raise NotImplementedError

    def _background(self) -> Flow[None]:
        raise NotImplementedError

    def _exit(self, exc: BaseException | None) -> Flow[None]:
        raise NotImplementedError

    def _wake(self) -> None:
        """Cut the background loop's current sleep short."""
        raise NotImplementedError

    def _reported(self, exc: BaseException | None, problem: StatewardError) -> None:
        """Reporting the outcome failed: raise that, unless the block's own error is
        on its way out (it wins, carrying the problem as a note)."""
        if exc is None:
            raise problem
        exc.add_note(f"stateward could not record this failure of {self!r}: {problem!r}")


class _Tracker(Flows):
    """A tracked task run; see ``TaskTracker`` and ``AsyncTaskTracker`` for the two ways in."""

    def __init__(
        self,
        client: Client | AsyncClient,
        run_id: str,
        task_id: str,
        agent_id: str,
        options: TrackOptions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.run_id = run_id
        self.task_id = task_id
        self.agent_id = agent_id
        self._input = options.get("input")
        self._timeout = options.get("timeout")
        self._heartbeat_timeout = options.get("heartbeat_timeout")
        self._flush_every = options.get("flush_every", 100)
        self._flush_interval = options.get("flush_interval", 1.0)
        self._kinds = {**ERROR_KINDS, **options.get("error_kinds", {})}
        self._request_id = options.get("request_id")
        self._metadata = options.get("metadata", ())
        interval = as_seconds(options.get("heartbeat_interval"))
        if interval is None:
            beat = as_seconds(self._heartbeat_timeout)
            interval = beat / 3 if beat else DEFAULT_HEARTBEAT_INTERVAL
        if interval <= 0:
            raise UsageError(f"heartbeat_interval must be positive (got {interval:g})")
        if not 1 <= self._flush_every <= MAX_BATCH:
            raise UsageError(f"flush_every must be 1 to {MAX_BATCH} (got {self._flush_every})")
        if self._flush_interval <= 0:
            raise UsageError(f"flush_interval must be positive (got {self._flush_interval:g})")
        self._interval = interval
        self._clock = clock

        self.task_run: TaskRun | None = None
        """The task run as started (None before entering the block)."""
        self.result: Any = None
        """What the task run completes with, any JSON value; set it in the block."""
        self.compensation: Any = None
        """How to undo the task (a JSON descriptor), recorded when it completes."""
        self.progress: Any = None
        """Progress details (any JSON value) sent with every heartbeat."""
        self.heartbeat_error: StatewardError | None = None
        """Why heartbeats stopped, if the server refused one (e.g. the task timed out)."""
        self.log_error: StatewardError | None = None
        """Why logged events were lost, if the server refused a batch."""
        self.dropped_events = 0
        """Logged events the server refused (they are not in the log)."""
        self._cancel_requested = False
        self._lock = threading.Lock()
        self._events: deque[pb.NewEvent] = deque()
        self._oldest: float | None = None
        self._batch: tuple[str, list[pb.NewEvent]] | None = None
        self._retry_flush_at = 0.0
        self._next_beat = 0.0
        self._closing = False
        self._entered = False

    def __repr__(self) -> str:
        run = self.task_run.task_run_id if self.task_run else "not started"
        return f"<{type(self).__name__} {self.task_id!r} of {self.run_id!r}: {run}>"

    # -- for the block ------------------------------------------------------------------

    @property
    def task_run_id(self) -> str:
        if self.task_run is None:
            raise UsageError("the task run starts when the block is entered")
        return self.task_run.task_run_id

    @property
    def cancel_requested(self) -> bool:
        """Whether the run was cancelled (learnt from heartbeats): the task should stop."""
        return self._cancel_requested

    def raise_if_cancelled(self) -> None:
        """Raise :class:`CancelRequested` once the run was cancelled."""
        if self._cancel_requested:
            raise CancelRequested(f"run {self.run_id} was cancelled")

    def complete(self, result: Any = None, *, compensation: Any = None) -> None:
        """Set the result (and compensation) the task run completes with at exit."""
        self.result = result
        if compensation is not None:
            self.compensation = compensation

    def log(self, type: str, data: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        """Record a run event (sent in a batch, soon): ``log("step", {"n": 1})`` or
        ``log("step", n=1)``. A bad type or non-JSON data raises UsageError here."""
        if self._closing:
            raise UsageError(f"{self!r} has ended; log inside its block")
        if not EVENT_TYPE.fullmatch(type):
            raise UsageError(
                f"event type {type!r} must be 1 to 128 letters, digits and _ . : -, "
                "starting with a letter"
            )
        if type.startswith(SYSTEM_PREFIXES):
            raise UsageError(f"event type {type!r} uses a system prefix; choose another name")
        payload = {**(data or {}), **fields}
        try:
            encoded = encode_json(payload) if payload else b""
        except (TypeError, ValueError) as exc:
            raise UsageError(f"event data must be JSON: {exc}") from exc
        if len(encoded) > MAX_EVENT_DATA:
            raise UsageError(f"event data is {len(encoded)} bytes; the limit is {MAX_EVENT_DATA}")
        event = pb.NewEvent(
            type=type,
            data_json=encoded,
            client_time=to_timestamp(datetime.now(UTC)),
            task_run_id=self.task_run_id,
        )
        with self._lock:
            self._events.append(event)
            first = self._oldest is None
            if first:
                self._oldest = self._clock()
            full = len(self._events) >= self._flush_every
        if first or full:
            self._wake()

    # -- flows --------------------------------------------------------------------------

    def _enter(self) -> Flow[TaskRun]:
        if self._entered:
            raise UsageError("a task tracker can be entered only once")
        self._entered = True
        self.task_run = yield ExecutionCalls.start_task_run.step(
            self._client,
            self.run_id,
            self.task_id,
            self.agent_id,
            self._input,
            self._timeout,
            self._heartbeat_timeout,
            self._request_id,
            metadata=self._metadata,
        )
        self._next_beat = self._clock() + self._interval
        return self.task_run

    def _background(self) -> Flow[None]:
        """Heartbeat and ship events until the block exits."""
        while not self._closing:
            now = self._clock()
            if self._flush_due(now):
                try:
                    yield from self._flush(everything=False)
                except TransportError:
                    self._retry_flush_at = now + min(self._flush_interval, self._interval)
                except ServerError:
                    pass  # recorded in log_error; later batches still go out
            elif self.heartbeat_error is None and now >= self._next_beat:
                yield from self._beat(now)
            else:
                yield Sleep(self._until_next(now))

    def _flush_due(self, now: float) -> bool:
        if now < self._retry_flush_at:
            return False
        if self._batch is not None or len(self._events) >= self._flush_every:
            return True
        return self._oldest is not None and now - self._oldest >= self._flush_interval

    def _until_next(self, now: float) -> float:
        deadlines = [now + IDLE]
        if self.heartbeat_error is None:
            deadlines.append(self._next_beat)
        if self._batch is not None:
            deadlines.append(self._retry_flush_at)
        elif self._oldest is not None:
            deadlines.append(max(self._oldest + self._flush_interval, self._retry_flush_at))
        return max(min(deadlines) - now, 0.0)

    def _beat(self, now: float) -> Flow[None]:
        self._next_beat = now + self._interval
        try:
            # A beat slower than the interval is as good as lost: give up on it in time
            # to try again within the lease.
            beat = yield ExecutionCalls.heartbeat.step(
                self._client,
                self.task_run_id,
                self.progress,
                timeout=self._interval,
                metadata=self._metadata,
            )
        except TransportError:
            # Try again soon, not a whole interval later: several tries fit in the
            # lease, so a short outage costs no lease.
            self._next_beat = self._clock() + self._interval / RETRIES_PER_INTERVAL
            return
        except ServerError as exc:
            self.heartbeat_error = exc  # the task run is over (timed out, interrupted...)
            return
        if beat.cancel_requested:
            self._cancel_requested = True

    def _flush(self, *, everything: bool) -> Flow[None]:
        """Send one batch (or, at exit, all of them) in order; a batch that failed in
        transit goes again first, with the same idempotency key."""
        while True:
            with self._lock:
                if self._batch is None:
                    if not self._events:
                        return
                    count = min(len(self._events), MAX_BATCH)
                    events = [self._events.popleft() for _ in range(count)]
                    self._batch = (new_request_id(), events)
                    self._oldest = self._clock() if self._events else None
                request_id, events = self._batch
            request = pb.AppendEventsRequest(events=events, request_id=request_id)
            prepared = Prepared(
                request, AppendedEvents.from_proto, request_id, None, self._metadata
            )
            try:
                yield Call(APPEND, prepared)
            except ServerError as exc:
                self._batch = None
                self.dropped_events += len(events)
                self.log_error = exc
                raise
            self._batch = None
            if not everything:
                return

    def _exit(self, exc: BaseException | None) -> Flow[None]:
        """Ship the remaining events, then complete or fail the task run."""
        try:
            yield from self._flush(everything=True)
        except StatewardError:
            pass  # recorded; the outcome matters more, and is reported regardless
        if exc is None:
            yield ExecutionCalls.complete_task_run.step(
                self._client,
                self.task_run_id,
                self.result,
                self.compensation,
                metadata=self._metadata,
            )
            if self.log_error is not None:
                self.log_error.add_note(
                    f"task run {self.task_run_id} completed, but {self.dropped_events} "
                    "logged events were refused and are not in the log"
                )
                raise self.log_error
            return
        kind = error_kind(exc, self._kinds)
        message, details = describe_failure(exc)
        yield ExecutionCalls.fail_task_run.step(
            self._client,
            self.task_run_id,
            message,
            kind,
            kind in RETRYABLE,
            details,
            metadata=self._metadata,
        )


class InThread(Flows):
    """The blocking way in: flows run on a ``Client``, the background loop in a thread."""

    _client: Client

    def _plumb(self, thread_name: str) -> None:
        self._thread_name = thread_name
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self.background_error: BaseException | None = None
        """An unexpected error that stopped the background thread (a bug)."""

    def __enter__(self) -> Self:
        self._client._run(self._enter())
        self._thread = threading.Thread(
            target=self._run_background, name=self._thread_name, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
        try:
            self._client._run(self._exit(exc))
        except StatewardError as problem:
            self._reported(exc, problem)

    def _run_background(self) -> None:
        try:
            self._client._run(self._background(), sleep=self._sleep)
        except BaseException as exc:  # never let a thread die silently
            self.background_error = exc

    def _sleep(self, seconds: float) -> None:
        self._wakeup.wait(seconds)
        self._wakeup.clear()

    def _wake(self) -> None:
        self._wakeup.set()


class InTask(Flows):
    """The asyncio way in: flows run on an ``AsyncClient``, the background loop in an
    asyncio task; use the tracker from the event loop that entered it."""

    _client: AsyncClient

    def _plumb(self) -> None:
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.background_error: BaseException | None = None
        """An unexpected error that stopped the background task (a bug)."""

    async def __aenter__(self) -> Self:
        await self._client._run(self._enter())
        self._task = asyncio.create_task(self._run_background())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        self._wake()
        if self._task is not None:
            await asyncio.shield(self._task)
        try:
            await self._client._run(self._exit(exc))
        except StatewardError as problem:
            self._reported(exc, problem)

    async def _run_background(self) -> None:
        try:
            await self._client._run(self._background(), sleep=self._sleep)
        except Exception as exc:
            self.background_error = exc

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except TimeoutError:
            pass
        self._wakeup.clear()

    def _wake(self) -> None:
        self._wakeup.set()


class TaskTracker(InThread, _Tracker):
    """``with client.track_task(...) as task:`` on a blocking ``Client``.

    Heartbeats and event batches go out from a background thread.
    """

    _client: Client

    def __init__(
        self, client: Client, run_id: str, task_id: str, agent_id: str, options: TrackOptions
    ) -> None:
        _Tracker.__init__(self, client, run_id, task_id, agent_id, options)
        self._plumb(f"stateward-task-{task_id}")


class AsyncTaskTracker(InTask, _Tracker):
    """``async with client.track_task(...) as task:`` on an ``AsyncClient``.

    Heartbeats and event batches go out from a background asyncio task; use the
    tracker from the event loop that entered it.
    """

    _client: AsyncClient

    def __init__(
        self,
        client: AsyncClient,
        run_id: str,
        task_id: str,
        agent_id: str,
        options: TrackOptions,
    ) -> None:
        _Tracker.__init__(self, client, run_id, task_id, agent_id, options)
        self._plumb()
