"""ExecutionService calls: workflow runs, task runs, the event log (built once for both clients)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from stateward.v1 import common_pb2
from stateward.v1 import execution_pb2 as pb

from ._codec import (
    encode_json_or_empty,
    new_request_id,
    str_map,
    to_datetime,
    to_duration,
    to_timestamp,
)
from ._operation import EXECUTION, Prepared, pages, server_stream, unary
from ._options import MetadataLike
from .models import (
    AppendedEvents,
    ErrorKind,
    Event,
    Heartbeat,
    NewEvent,
    Page,
    RunStatus,
    TaskRun,
    TaskStatus,
    WorkflowRun,
    to_proto_enum,
)


def _run(response: Any) -> WorkflowRun:
    return WorkflowRun.from_proto(response.run)


def _runs(response: pb.ListWorkflowRunsResponse) -> Page[WorkflowRun]:
    return Page([WorkflowRun.from_proto(r) for r in response.runs], response.next_page_token)


def _lease_expiry(response: pb.HeartbeatWorkflowRunResponse) -> datetime | None:
    return to_datetime(response, "lease_expire_time")


def _task_run(response: Any) -> TaskRun:
    return TaskRun.from_proto(response.task_run)


def _task_runs(response: Any) -> Page[TaskRun]:
    return Page([TaskRun.from_proto(t) for t in response.task_runs], response.next_page_token)


def _events(response: pb.ListEventsResponse) -> Page[Event]:
    return Page([Event.from_proto(e) for e in response.events], response.next_page_token)


def _streamed_event(response: pb.SubscribeEventsResponse) -> Event | None:
    """The event of a stream message; None for a keepalive."""
    return Event.from_proto(response.event) if response.HasField("event") else None


def _error(
    message: str, kind: ErrorKind | str, retryable: bool, details: Mapping[str, Any] | None
) -> common_pb2.ErrorDetail:
    return common_pb2.ErrorDetail(
        message=message,
        kind=to_proto_enum(ErrorKind, kind),
        retryable=retryable,
        details_json=encode_json_or_empty(details),
    )


def _event_filter(agent_id: str, run_id: str, task_run_id: str, types: Iterable[str]) -> Any:
    return pb.EventFilter(
        agent_id=agent_id, run_id=run_id, task_run_id=task_run_id, types=list(types)
    )


def _time(value: datetime | None) -> Any:
    return to_timestamp(value) if value is not None else None


class ExecutionCalls:
    """Record what agents execute, and read or follow the namespace's event log."""

    # -- workflow runs --------------------------------------------------------------

    @unary(EXECUTION, "StartWorkflowRun")
    def start_workflow_run(
        self,
        workflow_name: str,
        agent_id: str = "",
        input: Any = None,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        *,
        heartbeat_timeout: timedelta | float | None = None,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[WorkflowRun]:
        """Start a run of ``workflow_name`` (RUNNING); ``input`` is any JSON value.

        With ``heartbeat_timeout`` (timedelta or seconds), the run must be kept alive with
        :meth:`heartbeat_workflow_run` at least that often, or the server marks it
        INTERRUPTED: a driver that dies between task runs is then found.
        """
        request = pb.StartWorkflowRunRequest(
            workflow_name=workflow_name,
            agent_id=agent_id,
            input_json=encode_json_or_empty(input),
            labels=str_map(labels),
            request_id=new_request_id(request_id),
            heartbeat_timeout=(
                to_duration(heartbeat_timeout) if heartbeat_timeout is not None else None
            ),
        )
        return Prepared(request, _run, request.request_id, timeout, metadata)

    @unary(EXECUTION, "GetWorkflowRun")
    def get_workflow_run(
        self, run_id: str, *, timeout: float | None = None, metadata: MetadataLike = ()
    ) -> Prepared[WorkflowRun]:
        """Read one workflow run."""
        return Prepared(pb.GetWorkflowRunRequest(run_id=run_id), _run, None, timeout, metadata)

    @unary(EXECUTION, "ListWorkflowRuns")
    def list_workflow_runs(
        self,
        workflow_name: str = "",
        status: RunStatus | str | None = None,
        labels: Mapping[str, str] | None = None,
        agent_id: str = "",
        start_time_from: datetime | None = None,
        start_time_to: datetime | None = None,
        root_run_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Page[WorkflowRun]]:
        """One page of workflow runs, newest first; filters combine with AND."""
        request = pb.ListWorkflowRunsRequest(
            workflow_name=workflow_name,
            status=to_proto_enum(RunStatus, status),
            labels=str_map(labels),
            agent_id=agent_id,
            start_time_from=_time(start_time_from),
            start_time_to=_time(start_time_to),
            root_run_id=root_run_id,
            page_size=page_size,
            page_token=page_token,
        )
        return Prepared(request, _runs, None, timeout, metadata)

    iter_workflow_runs = pages(list_workflow_runs, "Every matching workflow run, newest first.")

    @unary(EXECUTION, "CompleteWorkflowRun")
    def complete_workflow_run(
        self,
        run_id: str,
        result: Any = None,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[WorkflowRun]:
        """RUNNING -> COMPLETED with ``result`` (any JSON value)."""
        request = pb.CompleteWorkflowRunRequest(
            run_id=run_id,
            result_json=encode_json_or_empty(result),
            request_id=new_request_id(request_id),
        )
        return Prepared(request, _run, request.request_id, timeout, metadata)

    @unary(EXECUTION, "FailWorkflowRun")
    def fail_workflow_run(
        self,
        run_id: str,
        message: str,
        kind: ErrorKind | str = ErrorKind.UNKNOWN,
        retryable: bool = False,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[WorkflowRun]:
        """RUNNING -> FAILED, recording what went wrong."""
        request = pb.FailWorkflowRunRequest(
            run_id=run_id,
            error=_error(message, kind, retryable, details),
            request_id=new_request_id(request_id),
        )
        return Prepared(request, _run, request.request_id, timeout, metadata)

    @unary(EXECUTION, "CancelWorkflowRun")
    def cancel_workflow_run(
        self,
        run_id: str,
        reason: str = "",
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[WorkflowRun]:
        """PENDING or RUNNING -> CANCELLED; its task runs learn on their next heartbeat."""
        request = pb.CancelWorkflowRunRequest(
            run_id=run_id, reason=reason, request_id=new_request_id(request_id)
        )
        return Prepared(request, _run, request.request_id, timeout, metadata)

    @unary(EXECUTION, "HeartbeatWorkflowRun")
    def heartbeat_workflow_run(
        self, run_id: str, *, timeout: float | None = None, metadata: MetadataLike = ()
    ) -> Prepared[datetime | None]:
        """Extend a running workflow run's lease; returns the new expiry (None if the run
        has no heartbeat timeout). A run that is no longer RUNNING (cancelled, or
        INTERRUPTED because a heartbeat came too late) raises FailedPrecondition."""
        request = pb.HeartbeatWorkflowRunRequest(run_id=run_id)
        return Prepared(request, _lease_expiry, None, timeout, metadata)

    # -- task runs ------------------------------------------------------------------

    @unary(EXECUTION, "StartTaskRun")
    def start_task_run(
        self,
        run_id: str,
        task_id: str,
        agent_id: str,
        input: Any = None,
        task_timeout: timedelta | float | None = None,
        heartbeat_timeout: timedelta | float | None = None,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[TaskRun]:
        """Start one attempt of ``task_id`` in a running workflow run.

        ``task_timeout`` bounds the whole task and ``heartbeat_timeout`` the
        gap between heartbeats (timedelta or seconds; None for no limit).
        ``timeout`` is, as everywhere, this call's own deadline.
        """
        request = pb.StartTaskRunRequest(
            run_id=run_id,
            task_id=task_id,
            agent_id=agent_id,
            timeout=to_duration(task_timeout) if task_timeout is not None else None,
            heartbeat_timeout=(
                to_duration(heartbeat_timeout) if heartbeat_timeout is not None else None
            ),
            input_json=encode_json_or_empty(input),
            request_id=new_request_id(request_id),
        )
        return Prepared(request, _task_run, request.request_id, timeout, metadata)

    @unary(EXECUTION, "Heartbeat")
    def heartbeat(
        self,
        task_run_id: str,
        progress: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Heartbeat]:
        """Extend a running task's lease; ``.cancel_requested`` tells the worker to stop."""
        request = pb.HeartbeatRequest(
            task_run_id=task_run_id, progress_json=encode_json_or_empty(progress)
        )
        return Prepared(request, Heartbeat.from_proto, None, timeout, metadata)

    @unary(EXECUTION, "CompleteTaskRun")
    def complete_task_run(
        self,
        task_run_id: str,
        result: Any = None,
        compensation: Any = None,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[TaskRun]:
        """RUNNING -> COMPLETED with ``result``, and how to undo it (``compensation``)."""
        request = pb.CompleteTaskRunRequest(
            task_run_id=task_run_id,
            result_json=encode_json_or_empty(result),
            compensation_json=encode_json_or_empty(compensation),
            request_id=new_request_id(request_id),
        )
        return Prepared(request, _task_run, request.request_id, timeout, metadata)

    @unary(EXECUTION, "FailTaskRun")
    def fail_task_run(
        self,
        task_run_id: str,
        message: str,
        kind: ErrorKind | str = ErrorKind.UNKNOWN,
        retryable: bool = False,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[TaskRun]:
        """RUNNING -> FAILED, with the error's kind and whether a retry can succeed."""
        request = pb.FailTaskRunRequest(
            task_run_id=task_run_id,
            error=_error(message, kind, retryable, details),
            request_id=new_request_id(request_id),
        )
        return Prepared(request, _task_run, request.request_id, timeout, metadata)

    @unary(EXECUTION, "GetTaskRun")
    def get_task_run(
        self, task_run_id: str, *, timeout: float | None = None, metadata: MetadataLike = ()
    ) -> Prepared[TaskRun]:
        """Read one task run."""
        request = pb.GetTaskRunRequest(task_run_id=task_run_id)
        return Prepared(request, _task_run, None, timeout, metadata)

    @unary(EXECUTION, "ListTaskRuns")
    def list_task_runs(
        self,
        run_id: str = "",
        agent_id: str = "",
        status: TaskStatus | str | None = None,
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Page[TaskRun]]:
        """One page of the task runs of a workflow run and/or an agent (give at least one)."""
        request = pb.ListTaskRunsRequest(
            run_id=run_id,
            agent_id=agent_id,
            status=to_proto_enum(TaskStatus, status),
            page_size=page_size,
            page_token=page_token,
        )
        return Prepared(request, _task_runs, None, timeout, metadata)

    iter_task_runs = pages(list_task_runs, "Every matching task run, in start order.")

    @unary(EXECUTION, "GetAgentHistory")
    def get_agent_history(
        self,
        agent_id: str,
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Page[TaskRun]]:
        """One page of the agent's task runs with their outcome, newest first."""
        request = pb.GetAgentHistoryRequest(
            agent_id=agent_id, page_size=page_size, page_token=page_token
        )
        return Prepared(request, _task_runs, None, timeout, metadata)

    # -- events ---------------------------------------------------------------------

    @unary(EXECUTION, "AppendEvents")
    def append_events(
        self,
        events: Iterable[NewEvent],
        request_id: str | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[AppendedEvents]:
        """Append 1 to 1000 client run events atomically, in order."""
        request = pb.AppendEventsRequest(
            events=[event.to_proto() for event in events],
            request_id=new_request_id(request_id),
        )
        return Prepared(request, AppendedEvents.from_proto, request.request_id, timeout, metadata)

    @unary(EXECUTION, "ListEvents")
    def list_events(
        self,
        agent_id: str = "",
        run_id: str = "",
        task_run_id: str = "",
        types: Iterable[str] = (),
        after_sequence: int = 0,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Page[Event]]:
        """One page of the event log in sequence order; filters combine with AND."""
        request = pb.ListEventsRequest(
            filter=_event_filter(agent_id, run_id, task_run_id, types),
            after_sequence=after_sequence,
            start_time=_time(start_time),
            end_time=_time(end_time),
            page_size=page_size,
            page_token=page_token,
        )
        return Prepared(request, _events, None, timeout, metadata)

    iter_events = pages(list_events, "Every matching event, in sequence order.")

    @server_stream(EXECUTION, "SubscribeEvents")
    def subscribe_events(
        self,
        agent_id: str = "",
        run_id: str = "",
        task_run_id: str = "",
        types: Iterable[str] = (),
        after_sequence: int = 0,
        from_head: bool = False,
        keepalive_interval: timedelta | float | None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Prepared[Event | None]:
        """Follow matching events: those after ``after_sequence``, then live ones.

        Each event comes once, in sequence order; keepalives are skipped. The
        stream has no deadline unless ``timeout`` is given and is not retried:
        after a disconnect, subscribe again with the last ``sequence`` seen.
        """
        request = pb.SubscribeEventsRequest(
            filter=_event_filter(agent_id, run_id, task_run_id, types),
            after_sequence=after_sequence,
            from_head=from_head,
            keepalive_interval=(
                to_duration(keepalive_interval) if keepalive_interval is not None else None
            ),
        )
        return Prepared(request, _streamed_event, None, timeout, metadata)
