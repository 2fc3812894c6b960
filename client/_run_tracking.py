"""``track_run``: run a block of code as a workflow run whose lease the client keeps alive.

::

    with client.track_run("ingest", agent_id="a1", heartbeat_timeout=60) as run:
        with client.track_task(run.run_id, "fetch", "a1") as task:
            task.result = fetch()
        run.result = {"pages": 3}
    # COMPLETED with that result; an exception instead FAILS the run and re-raises.

Entering starts the run with a heartbeat timeout; a background loop (a thread, or an
asyncio task) calls HeartbeatWorkflowRun every third of it. If this process dies, the
heartbeats stop and the server marks the run INTERRUPTED, where a plain run would stay
RUNNING forever. A heartbeat refused because the run was cancelled or interrupted turns
``cancel_requested`` true, so the block can stop early (``raise_if_cancelled``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from ._execution import ExecutionCalls
from ._operation import Flow, Sleep
from ._options import MetadataLike
from ._tracking import (
    ERROR_KINDS,
    RETRIES_PER_INTERVAL,
    RETRYABLE,
    CancelRequested,
    Flows,
    InTask,
    InThread,
    as_seconds,
    describe_failure,
    error_kind,
)
from .errors import FailedPrecondition, ServerError, TransportError, UsageError
from .models import ErrorKind, RunStatus, WorkflowRun

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .sync import Client

DEFAULT_HEARTBEAT_TIMEOUT = 60.0
"""Seconds a tracked run may go without a heartbeat before the server interrupts it."""
STOPPED = frozenset({"CANCELLED", "INTERRUPTED"})
"""Run statuses a refused heartbeat reports when the work should stop."""


class RunTrackOptions(TypedDict, total=False):
    """The options of ``track_run``, all keyword-only and optional."""

    run_id: str
    """Take over this RUNNING run of the workflow instead of starting one: the attempt
    RetryWorkflowRun started, or a run another process began. Its own heartbeat
    timeout, if it has one, sets the heartbeat interval."""
    agent_id: str
    """The agent the run belongs to (must exist)."""
    input: Any
    """The run's input, any JSON value."""
    labels: Mapping[str, str]
    """Labels to filter runs by."""
    heartbeat_timeout: timedelta | float
    """Longest allowed gap between heartbeats before the server interrupts the run
    (default 60 s)."""
    heartbeat_interval: timedelta | float
    """Seconds between heartbeats; default a third of ``heartbeat_timeout``."""
    error_kinds: Mapping[type[BaseException], ErrorKind]
    """Extra exception classes -> ErrorKind, on top of ``ERROR_KINDS``."""
    request_id: str | None
    """Idempotency key of the StartWorkflowRun call."""
    metadata: MetadataLike
    """Metadata for every call the tracker makes."""


class _RunFlows(Flows):
    """A tracked workflow run; see ``RunTracker`` and ``AsyncRunTracker`` for the two ways in."""

    def __init__(
        self,
        client: Client | AsyncClient,
        workflow_name: str,
        options: RunTrackOptions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.workflow_name = workflow_name
        self._adopt = options.get("run_id", "")
        self._agent_id = options.get("agent_id", "")
        self._input = options.get("input")
        self._labels = options.get("labels")
        self._kinds = {**ERROR_KINDS, **options.get("error_kinds", {})}
        self._request_id = options.get("request_id")
        self._metadata = options.get("metadata", ())
        if self._adopt and {"agent_id", "input", "labels", "request_id"} & options.keys():
            raise UsageError(
                "agent_id, input, labels and request_id start a run; an adopted run "
                "(run_id) has its own"
            )
        timeout = as_seconds(options.get("heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT))
        if timeout is None or timeout <= 0:
            raise UsageError(f"heartbeat_timeout must be positive (got {timeout})")
        self._heartbeat_timeout = timeout
        self._asked_interval = as_seconds(options.get("heartbeat_interval"))
        self._interval = self._checked_interval(timeout)
        self._clock = clock

        self.run: WorkflowRun | None = None
        """The run as started (None before entering the block)."""
        self.result: Any = None
        """What the run completes with, any JSON value; set it in the block."""
        self.heartbeat_error: ServerError | None = None
        """Why heartbeats stopped, if the server refused one (the run was cancelled,
        interrupted, or ended elsewhere)."""
        self._cancel_requested = False
        self._next_beat = 0.0
        self._closing = False
        self._entered = False

    def __repr__(self) -> str:
        run = self.run.run_id if self.run else "not started"
        return f"<{type(self).__name__} {self.workflow_name!r}: {run}>"

    # -- for the block ------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        if self.run is None:
            raise UsageError("the workflow run starts when the block is entered")
        return self.run.run_id

    @property
    def cancel_requested(self) -> bool:
        """Whether the run was cancelled or interrupted (learnt from heartbeats): stop."""
        return self._cancel_requested

    def raise_if_cancelled(self) -> None:
        """Raise :class:`CancelRequested` once the run was cancelled or interrupted."""
        if self._cancel_requested:
            raise CancelRequested(f"run {self.run_id} is no longer running: {self.heartbeat_error}")

    def complete(self, result: Any = None) -> None:
        """Set the result the run completes with at exit."""
        self.result = result

    def _checked_interval(self, timeout: float) -> float:
        interval = self._asked_interval
        if interval is None:
            interval = timeout / 3
        if not 0 < interval < timeout:
            raise UsageError(
                f"heartbeat_interval must be positive and below the heartbeat timeout "
                f"({timeout:g} s; got {interval:g})"
            )
        return interval

    # -- flows --------------------------------------------------------------------------

    def _enter(self) -> Flow[WorkflowRun]:
        if self._entered:
            raise UsageError("a run tracker can be entered only once")
        self._entered = True
        if self._adopt:
            return (yield from self._take_over())
        self.run = yield ExecutionCalls.start_workflow_run.step(
            self._client,
            self.workflow_name,
            self._agent_id,
            self._input,
            self._labels,
            self._request_id,
            heartbeat_timeout=self._heartbeat_timeout,
            metadata=self._metadata,
        )
        self._next_beat = self._clock() + self._interval
        return self.run

    def _take_over(self) -> Flow[WorkflowRun]:
        run: WorkflowRun = yield ExecutionCalls.get_workflow_run.step(
            self._client, self._adopt, metadata=self._metadata
        )
        if run.workflow_name != self.workflow_name:
            raise UsageError(
                f"run {run.run_id} is a run of {run.workflow_name!r}, not {self.workflow_name!r}"
            )
        if run.status != RunStatus.RUNNING:
            raise UsageError(f"run {run.run_id} is {run.status}; only a RUNNING run can be tracked")
        if run.heartbeat_timeout is not None:  # the server enforces the run's own
            self._heartbeat_timeout = run.heartbeat_timeout.total_seconds()
            self._interval = self._checked_interval(self._heartbeat_timeout)
        self.run = run
        # A beat at once: the run may have gone unattended for most of its lease.
        self._next_beat = self._clock()
        return run

    def _background(self) -> Flow[None]:
        """Heartbeat until the block exits or the server refuses a heartbeat."""
        while not self._closing and self.heartbeat_error is None:
            now = self._clock()
            if now < self._next_beat:
                yield Sleep(self._next_beat - now)
                continue
            self._next_beat = now + self._interval
            try:
                # A beat that takes longer than the interval is as good as lost: give up
                # on it in time to try again within the lease.
                yield ExecutionCalls.heartbeat_workflow_run.step(
                    self._client, self.run_id, timeout=self._interval, metadata=self._metadata
                )
            except TransportError:
                # Try again soon, not a whole interval later: several tries fit in the
                # lease, so a short outage costs no lease.
                self._next_beat = self._clock() + self._interval / RETRIES_PER_INTERVAL
                continue
            except ServerError as exc:
                self.heartbeat_error = exc
                if isinstance(exc, FailedPrecondition):
                    self._cancel_requested = exc.metadata.get("current_status") in STOPPED

    def _exit(self, exc: BaseException | None) -> Flow[None]:
        """Complete the run with ``result``, or fail it with the escaping exception."""
        if exc is None:
            yield ExecutionCalls.complete_workflow_run.step(
                self._client, self.run_id, self.result, metadata=self._metadata
            )
            return
        kind = error_kind(exc, self._kinds)
        message, details = describe_failure(exc)
        yield ExecutionCalls.fail_workflow_run.step(
            self._client,
            self.run_id,
            message,
            kind,
            kind in RETRYABLE,
            details,
            metadata=self._metadata,
        )


class RunTracker(InThread, _RunFlows):
    """``with client.track_run(...) as run:`` on a blocking ``Client``.

    Heartbeats go out from a background thread.
    """

    _client: Client

    def __init__(self, client: Client, workflow_name: str, options: RunTrackOptions) -> None:
        _RunFlows.__init__(self, client, workflow_name, options)
        self._plumb(f"stateward-run-{workflow_name}")


class AsyncRunTracker(InTask, _RunFlows):
    """``async with client.track_run(...) as run:`` on an ``AsyncClient``.

    Heartbeats go out from a background asyncio task; use the tracker from the event
    loop that entered it.
    """

    _client: AsyncClient

    def __init__(self, client: AsyncClient, workflow_name: str, options: RunTrackOptions) -> None:
        _RunFlows.__init__(self, client, workflow_name, options)
        self._plumb()
