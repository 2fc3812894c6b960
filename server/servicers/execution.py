"""ExecutionService over gRPC, plus the run/task/event message converters."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import grpc

from stateward.server.deps import Deps
from stateward.server.domain import paging
from stateward.server.domain.errors import InvalidArgument
from stateward.server.domain.runs import RunStatus, TaskStatus
from stateward.server.events_bus import EventBus
from stateward.server.rpc import convert, status
from stateward.server.rpc.context import namespace, replay, respond, unary
from stateward.server.services.execution import ExecutionService, Keepalive, Lease, NewEvent
from stateward.server.services.sweeper import Sweeper
from stateward.storage.events import EventFilter
from stateward.storage.records import EventRecord
from stateward.storage.runs import RunRecord, TaskRunRecord
from stateward.v1 import execution_pb2 as pb
from stateward.v1 import execution_pb2_grpc

Ctx = grpc.aio.ServicerContext
SERVICE = "stateward.v1.ExecutionService"

RUN_STATUS = {s.value: pb.RunStatus.Value(f"RUN_STATUS_{s.value}") for s in RunStatus}
RUN_STATUS_NAME = {number: name for name, number in RUN_STATUS.items()}
TASK_STATUS = {s.value: pb.TaskStatus.Value(f"TASK_STATUS_{s.value}") for s in TaskStatus}
TASK_STATUS_NAME = {number: name for name, number in TASK_STATUS.items()}


# -- converters (shared with other areas that return runs, e.g. RetryWorkflowRun) ---------------
def workflow_run(r: RunRecord) -> pb.WorkflowRun:
    return pb.WorkflowRun(
        run_id=r.run_id,
        workflow_name=r.workflow_name,
        agent_id=r.agent_id,
        status=RUN_STATUS[r.status],  # type: ignore[arg-type]
        input_json=r.input,
        result_json=r.result,
        error=convert.error_detail(r.error),
        labels=r.labels,
        attempt=r.attempt,
        retry_of_run_id=r.retry_of_run_id,
        root_run_id=r.root_run_id,
        cancel_requested=r.cancel_requested,
        create_time=convert.timestamp(r.created_at),
        start_time=convert.timestamp(r.started_at),
        end_time=convert.timestamp(r.ended_at),
        update_time=convert.timestamp(r.updated_at),
        heartbeat_timeout=convert.duration(r.heartbeat_timeout_us),
        last_heartbeat_time=convert.timestamp(r.last_heartbeat_at),
        lease_expire_time=convert.timestamp(r.lease_expires_at),
    )


def task_run(r: TaskRunRecord) -> pb.TaskRun:
    return pb.TaskRun(
        task_run_id=r.task_run_id,
        run_id=r.run_id,
        task_id=r.task_id,
        agent_id=r.agent_id,
        attempt=r.attempt,
        status=TASK_STATUS[r.status],  # type: ignore[arg-type]
        input_json=r.input,
        result_json=r.result,
        error=convert.error_detail(r.error),
        timeout=convert.duration(r.timeout_us),
        heartbeat_timeout=convert.duration(r.heartbeat_timeout_us),
        progress_json=r.progress,
        compensation_json=r.compensation,
        carried_from_task_run_id=r.carried_from,
        cancel_requested=r.cancel_requested,
        start_time=convert.timestamp(r.started_at),
        end_time=convert.timestamp(r.ended_at),
        last_heartbeat_time=convert.timestamp(r.last_heartbeat_at),
        lease_expire_time=convert.timestamp(r.lease_expires_at),
    )


def event(r: Any) -> pb.Event:
    """An EventRecord or an EventDraft (same fields) as a message."""
    return pb.Event(
        sequence=r.sequence,
        type=r.type,
        agent_id=r.agent_id,
        run_id=r.run_id,
        task_run_id=r.task_run_id,
        data_json=r.data,
        create_time=convert.timestamp(r.created_at),
        client_time=convert.timestamp(r.client_time),
    )


def event_item(r: Any) -> bytes:
    """An event as an encoded SubscribeEventsResponse: the bus encodes each event once,
    and SubscribeEvents sends these bytes as they are."""
    return pb.SubscribeEventsResponse(event=event(r)).SerializeToString()


def keepalive_item(head: int) -> bytes:
    message = pb.SubscribeEventsResponse(keepalive=pb.Keepalive(head_sequence=head))
    return message.SerializeToString()


def event_filter(message: pb.EventFilter) -> EventFilter:
    return EventFilter(
        message.agent_id, message.run_id, message.task_run_id, frozenset(message.types)
    )


def _time(message: Any, field: str) -> int | None:
    return convert.micros(getattr(message, field), field) if message.HasField(field) else None


def _duration(message: Any, field: str) -> int | None:
    return (
        convert.duration_micros(getattr(message, field), field) if message.HasField(field) else None
    )


class ExecutionServicer(execution_pb2_grpc.ExecutionServiceServicer):
    def __init__(self, service: ExecutionService) -> None:
        self.service = service

    # -- workflow runs ------------------------------------------------
    @unary
    async def StartWorkflowRun(
        self, request: pb.StartWorkflowRunRequest, context: Ctx
    ) -> pb.StartWorkflowRunResponse:
        def build(record: RunRecord) -> pb.StartWorkflowRunResponse:
            return pb.StartWorkflowRunResponse(run=workflow_run(record))

        result = await self.service.start_run(
            namespace(context),
            request.workflow_name,
            request.agent_id,
            request.input_json,
            dict(request.labels),
            replay(request, "StartWorkflowRun", build),
            heartbeat_timeout_us=_duration(request, "heartbeat_timeout"),
        )
        return respond(result, pb.StartWorkflowRunResponse, build)

    @unary
    async def GetWorkflowRun(
        self, request: pb.GetWorkflowRunRequest, context: Ctx
    ) -> pb.GetWorkflowRunResponse:
        record = await self.service.get_run(namespace(context), request.run_id)
        return pb.GetWorkflowRunResponse(run=workflow_run(record))

    @unary
    async def ListWorkflowRuns(
        self, request: pb.ListWorkflowRunsRequest, context: Ctx
    ) -> pb.ListWorkflowRunsResponse:
        records, token = await self.service.list_runs(
            namespace(context),
            workflow_name=request.workflow_name,
            status=_run_status_filter(request.status),
            labels=dict(request.labels),
            agent_id=request.agent_id,
            created_from=_time(request, "start_time_from"),
            created_to=_time(request, "start_time_to"),
            root_run_id=request.root_run_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListWorkflowRunsResponse(
            runs=[workflow_run(r) for r in records], next_page_token=token
        )

    @unary
    async def CompleteWorkflowRun(
        self, request: pb.CompleteWorkflowRunRequest, context: Ctx
    ) -> pb.CompleteWorkflowRunResponse:
        def build(record: RunRecord) -> pb.CompleteWorkflowRunResponse:
            return pb.CompleteWorkflowRunResponse(run=workflow_run(record))

        result = await self.service.complete_run(
            namespace(context),
            request.run_id,
            request.result_json,
            replay(request, "CompleteWorkflowRun", build),
        )
        return respond(result, pb.CompleteWorkflowRunResponse, build)

    @unary
    async def FailWorkflowRun(
        self, request: pb.FailWorkflowRunRequest, context: Ctx
    ) -> pb.FailWorkflowRunResponse:
        def build(record: RunRecord) -> pb.FailWorkflowRunResponse:
            return pb.FailWorkflowRunResponse(run=workflow_run(record))

        result = await self.service.fail_run(
            namespace(context),
            request.run_id,
            convert.error_record(request.error),
            replay(request, "FailWorkflowRun", build),
        )
        return respond(result, pb.FailWorkflowRunResponse, build)

    @unary
    async def CancelWorkflowRun(
        self, request: pb.CancelWorkflowRunRequest, context: Ctx
    ) -> pb.CancelWorkflowRunResponse:
        def build(record: RunRecord) -> pb.CancelWorkflowRunResponse:
            return pb.CancelWorkflowRunResponse(run=workflow_run(record))

        result = await self.service.cancel_run(
            namespace(context),
            request.run_id,
            request.reason,
            replay(request, "CancelWorkflowRun", build),
        )
        return respond(result, pb.CancelWorkflowRunResponse, build)

    @unary
    async def HeartbeatWorkflowRun(
        self, request: pb.HeartbeatWorkflowRunRequest, context: Ctx
    ) -> pb.HeartbeatWorkflowRunResponse:
        lease = await self.service.heartbeat_run(namespace(context), request.run_id)
        return pb.HeartbeatWorkflowRunResponse(lease_expire_time=convert.timestamp(lease))

    # -- task runs ------------------------------------------------
    @unary
    async def StartTaskRun(
        self, request: pb.StartTaskRunRequest, context: Ctx
    ) -> pb.StartTaskRunResponse:
        def build(record: TaskRunRecord) -> pb.StartTaskRunResponse:
            return pb.StartTaskRunResponse(task_run=task_run(record))

        result = await self.service.start_task(
            namespace(context),
            request.run_id,
            request.task_id,
            request.agent_id,
            timeout_us=_duration(request, "timeout"),
            heartbeat_timeout_us=_duration(request, "heartbeat_timeout"),
            input=request.input_json,
            replay=replay(request, "StartTaskRun", build),
        )
        return respond(result, pb.StartTaskRunResponse, build)

    @unary
    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Ctx) -> pb.HeartbeatResponse:
        lease: Lease = await self.service.heartbeat(
            namespace(context), request.task_run_id, request.progress_json
        )
        return pb.HeartbeatResponse(
            cancel_requested=lease.cancel_requested,
            lease_expire_time=convert.timestamp(lease.expires_at),
        )

    @unary
    async def CompleteTaskRun(
        self, request: pb.CompleteTaskRunRequest, context: Ctx
    ) -> pb.CompleteTaskRunResponse:
        def build(record: TaskRunRecord) -> pb.CompleteTaskRunResponse:
            return pb.CompleteTaskRunResponse(task_run=task_run(record))

        result = await self.service.complete_task(
            namespace(context),
            request.task_run_id,
            request.result_json,
            request.compensation_json,
            replay(request, "CompleteTaskRun", build),
        )
        return respond(result, pb.CompleteTaskRunResponse, build)

    @unary
    async def FailTaskRun(
        self, request: pb.FailTaskRunRequest, context: Ctx
    ) -> pb.FailTaskRunResponse:
        def build(record: TaskRunRecord) -> pb.FailTaskRunResponse:
            return pb.FailTaskRunResponse(task_run=task_run(record))

        result = await self.service.fail_task(
            namespace(context),
            request.task_run_id,
            convert.error_record(request.error),
            replay(request, "FailTaskRun", build),
        )
        return respond(result, pb.FailTaskRunResponse, build)

    @unary
    async def GetTaskRun(
        self, request: pb.GetTaskRunRequest, context: Ctx
    ) -> pb.GetTaskRunResponse:
        record = await self.service.get_task(namespace(context), request.task_run_id)
        return pb.GetTaskRunResponse(task_run=task_run(record))

    @unary
    async def ListTaskRuns(
        self, request: pb.ListTaskRunsRequest, context: Ctx
    ) -> pb.ListTaskRunsResponse:
        records, token = await self.service.list_tasks(
            namespace(context),
            run_id=request.run_id,
            agent_id=request.agent_id,
            status=_task_status_filter(request.status),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListTaskRunsResponse(
            task_runs=[task_run(r) for r in records], next_page_token=token
        )

    @unary
    async def GetAgentHistory(
        self, request: pb.GetAgentHistoryRequest, context: Ctx
    ) -> pb.GetAgentHistoryResponse:
        records, token = await self.service.agent_history(
            namespace(context),
            request.agent_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.GetAgentHistoryResponse(
            task_runs=[task_run(r) for r in records], next_page_token=token
        )

    # -- events ------------------------------------------------
    @unary
    async def AppendEvents(
        self, request: pb.AppendEventsRequest, context: Ctx
    ) -> pb.AppendEventsResponse:
        events: list[NewEvent] = [
            (
                e.type,
                e.data_json,
                convert.micros(e.client_time, "client_time") if e.HasField("client_time") else None,
                e.run_id,
                e.task_run_id,
            )
            for e in request.events
        ]
        result = await self.service.append_events(
            namespace(context), events, replay(request, "AppendEvents", _appended)
        )
        return respond(result, pb.AppendEventsResponse, _appended)

    @unary
    async def ListEvents(
        self, request: pb.ListEventsRequest, context: Ctx
    ) -> pb.ListEventsResponse:
        records: list[EventRecord]
        records, token = await self.service.list_events(
            namespace(context),
            event_filter(request.filter),
            after=request.after_sequence,
            start=_time(request, "start_time"),
            end=_time(request, "end_time"),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListEventsResponse(events=[event(r) for r in records], next_page_token=token)

    async def SubscribeEvents(self, request: pb.SubscribeEventsRequest, context: Ctx) -> None:
        """Writes the encoded responses the service yields (registered with no serializer)."""
        write = context.write
        try:
            stream = self.service.subscribe(
                namespace(context),
                event_filter(request.filter),
                after=request.after_sequence,
                from_head=request.from_head,
                keepalive=(_duration(request, "keepalive_interval") or 0) / 1_000_000,
            )
        except Exception as error:
            await status.abort(context, error)
            return
        async with aclosing(stream):
            step = stream.__anext__
            while True:
                # Only the service's errors become a status; a failed write ends the call.
                try:
                    item = await step()
                except StopAsyncIteration:
                    return
                except Exception as error:
                    await status.abort(context, error)
                    return
                if isinstance(item, Keepalive):
                    await write(keepalive_item(item.head))
                    continue
                for message in item:
                    await write(message)


def _appended(span: tuple[int, int]) -> pb.AppendEventsResponse:
    return pb.AppendEventsResponse(first_sequence=span[0], last_sequence=span[1])


def _run_status_filter(value: int) -> str | None:
    if value and value not in RUN_STATUS_NAME:
        raise InvalidArgument.one("status", f"is not a known RunStatus (got {value})")
    return RUN_STATUS_NAME.get(value) if value else None


def _task_status_filter(value: int) -> str | None:
    if value and value not in TASK_STATUS_NAME:
        raise InvalidArgument.one("status", f"is not a known TaskStatus (got {value})")
    return TASK_STATUS_NAME.get(value) if value else None


def register(server: grpc.aio.Server, deps: Deps) -> None:
    settings = deps.settings
    bus = EventBus(
        deps.db,
        buffer=settings.subscriber_buffer,
        max_subscribers=settings.max_subscribers,
        encode=event_item,
    )
    deps.extras["event_bus"] = bus
    sweeper = Sweeper(deps.db, settings.sweep_interval)
    deps.startup.append(bus.start)
    deps.startup.append(sweeper.scan_interrupted)
    deps.background.append(sweeper.run)
    if bus.notifier is not None:
        deps.background.extend([bus.listen, bus.poll])
    deps.shutdown.append(bus.close)
    page_bytes = paging.page_budget(deps.settings.max_message_bytes)
    servicer = ExecutionServicer(ExecutionService(deps.db, bus, page_bytes=page_bytes))
    handlers = _Handlers()
    execution_pb2_grpc.add_ExecutionServiceServicer_to_server(servicer, handlers)
    # SubscribeEvents sends bytes encoded once per event for all subscribers: no serializer.
    handlers.methods["SubscribeEvents"] = grpc.unary_stream_rpc_method_handler(
        servicer.SubscribeEvents, request_deserializer=pb.SubscribeEventsRequest.FromString
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers.methods),)
    )
    server.add_registered_method_handlers(SERVICE, handlers.methods)


class _Handlers:
    """Collects the generated registration's handlers, so that one can be replaced."""

    def __init__(self) -> None:
        self.methods: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers also come through add_registered_method_handlers

    def add_registered_method_handlers(
        self, service: str, methods: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.methods.update(methods)
