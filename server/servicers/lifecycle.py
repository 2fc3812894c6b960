"""LifecycleService over gRPC."""

from __future__ import annotations

from typing import Any

import grpc

from stateward.server.deps import Deps
from stateward.server.domain import paging
from stateward.server.domain.errors import InvalidArgument
from stateward.server.domain.lifecycle import Action
from stateward.server.rpc import convert
from stateward.server.rpc.context import namespace, replay, respond, unary
from stateward.server.services.lifecycle import LifecycleService, TransitionResult
from stateward.storage.records import ErrorRecord
from stateward.v1 import common_pb2, lifecycle_pb2_grpc
from stateward.v1 import lifecycle_pb2 as pb

Ctx = grpc.aio.ServicerContext


class LifecycleServicer(lifecycle_pb2_grpc.LifecycleServiceServicer):
    def __init__(self, service: LifecycleService) -> None:
        self.service = service

    @unary
    async def CreateAgent(
        self, request: pb.CreateAgentRequest, context: Ctx
    ) -> pb.CreateAgentResponse:
        def build(record):  # type: ignore[no-untyped-def]
            return pb.CreateAgentResponse(agent=convert.agent(record))

        result = await self.service.create(
            namespace(context),
            request.agent_id,
            request.type,
            request.config_json,
            dict(request.labels),
            replay(request, "CreateAgent", build),
        )
        return respond(result, pb.CreateAgentResponse, build)

    @unary
    async def GetAgent(self, request: pb.GetAgentRequest, context: Ctx) -> pb.GetAgentResponse:
        record = await self.service.get(namespace(context), request.agent_id)
        return pb.GetAgentResponse(agent=convert.agent(record))

    @unary
    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: Ctx
    ) -> pb.ListAgentsResponse:
        status = convert.AGENT_STATUS_NAME.get(request.status) if request.status else None
        if request.status and status is None:  # open proto3 enum: unknown numbers arrive as-is
            raise InvalidArgument.one(
                "status", f"is not a known AgentStatus (got {request.status})"
            )
        records, token = await self.service.list_agents(
            namespace(context),
            status=status,
            type=request.type,
            labels=dict(request.labels),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListAgentsResponse(
            agents=[convert.agent(r) for r in records], next_page_token=token
        )

    @unary
    async def UpdateAgent(
        self, request: pb.UpdateAgentRequest, context: Ctx
    ) -> pb.UpdateAgentResponse:
        def build(record):  # type: ignore[no-untyped-def]
            return pb.UpdateAgentResponse(agent=convert.agent(record))

        result = await self.service.update(
            namespace(context),
            request.agent_id,
            etag=request.etag,
            config=request.config_json if request.update_config else None,
            labels=dict(request.labels) if request.update_labels else None,
            replay=replay(request, "UpdateAgent", build),
        )
        return respond(result, pb.UpdateAgentResponse, build)

    async def _transition(
        self,
        request: Any,
        context: Ctx,
        action: Action,
        response_type: Any,
        *,
        error: ErrorRecord | None = None,
    ) -> Any:
        def build(result: TransitionResult) -> Any:
            return response_type(
                agent=convert.agent(result.agent), transition=convert.transition(result.transition)
            )

        result = await self.service.transition(
            namespace(context),
            request.agent_id,
            action,
            reason=getattr(request, "reason", ""),
            error=error,
            replay=replay(request, type(request).__name__, build),
        )
        return respond(result, response_type, build)

    @unary
    async def InitializeAgent(
        self, request: pb.InitializeAgentRequest, context: Ctx
    ) -> pb.InitializeAgentResponse:
        return await self._transition(
            request, context, Action.INITIALIZE, pb.InitializeAgentResponse
        )

    @unary
    async def ActivateAgent(
        self, request: pb.ActivateAgentRequest, context: Ctx
    ) -> pb.ActivateAgentResponse:
        return await self._transition(request, context, Action.ACTIVATE, pb.ActivateAgentResponse)

    @unary
    async def PauseAgent(
        self, request: pb.PauseAgentRequest, context: Ctx
    ) -> pb.PauseAgentResponse:
        return await self._transition(request, context, Action.PAUSE, pb.PauseAgentResponse)

    @unary
    async def ResumeAgent(
        self, request: pb.ResumeAgentRequest, context: Ctx
    ) -> pb.ResumeAgentResponse:
        return await self._transition(request, context, Action.RESUME, pb.ResumeAgentResponse)

    @unary
    async def TerminateAgent(
        self, request: pb.TerminateAgentRequest, context: Ctx
    ) -> pb.TerminateAgentResponse:
        return await self._transition(request, context, Action.TERMINATE, pb.TerminateAgentResponse)

    @unary
    async def ReportAgentError(
        self, request: pb.ReportAgentErrorRequest, context: Ctx
    ) -> pb.ReportAgentErrorResponse:
        if request.kind not in common_pb2.ErrorKind.values():
            raise InvalidArgument.one("kind", f"is not a known ErrorKind (got {request.kind})")
        error = ErrorRecord(request.message, int(request.kind), False, request.details_json, 0)
        return await self._transition(
            request, context, Action.REPORT_ERROR, pb.ReportAgentErrorResponse, error=error
        )

    @unary
    async def ResetAgent(
        self, request: pb.ResetAgentRequest, context: Ctx
    ) -> pb.ResetAgentResponse:
        return await self._transition(request, context, Action.RESET, pb.ResetAgentResponse)

    @unary
    async def DeleteAgent(
        self, request: pb.DeleteAgentRequest, context: Ctx
    ) -> pb.DeleteAgentResponse:
        def build(agent_id: str) -> pb.DeleteAgentResponse:
            return pb.DeleteAgentResponse(agent_id=agent_id)

        result = await self.service.delete(
            namespace(context), request.agent_id, replay(request, "DeleteAgent", build)
        )
        return respond(result, pb.DeleteAgentResponse, build)

    @unary
    async def ListTransitions(
        self, request: pb.ListTransitionsRequest, context: Ctx
    ) -> pb.ListTransitionsResponse:
        records, token = await self.service.list_transitions(
            namespace(context),
            request.agent_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListTransitionsResponse(
            transitions=[convert.transition(r) for r in records], next_page_token=token
        )


def register(server: grpc.aio.Server, deps: Deps) -> None:
    service = LifecycleService(
        deps.db, page_bytes=paging.page_budget(deps.settings.max_message_bytes)
    )
    lifecycle_pb2_grpc.add_LifecycleServiceServicer_to_server(LifecycleServicer(service), server)
