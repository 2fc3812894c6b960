"""StateService over gRPC."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from stateward.server.deps import Deps
from stateward.server.rpc import convert
from stateward.server.rpc.context import namespace, replay, respond, unary
from stateward.server.services.state import StateService, state_service
from stateward.storage.states import StateRecord
from stateward.v1 import state_pb2 as pb
from stateward.v1 import state_pb2_grpc

Ctx: TypeAlias = grpc.aio.ServicerContext


def state_version(record: StateRecord, *, with_document: bool = True) -> pb.StateVersion:
    return pb.StateVersion(
        agent_id=record.agent_id,
        version=record.version,
        document_json=record.document if with_document else b"",
        schema_version=record.schema_version,
        size_bytes=record.size,
        create_time=convert.timestamp(record.created_at),
        event_sequence=record.event_sequence,
    )


def _expected(request: pb.SaveStateRequest | pb.PatchStateRequest) -> int | None:
    return request.expected_version if request.HasField("expected_version") else None


class StateServicer(state_pb2_grpc.StateServiceServicer):
    def __init__(self, service: StateService) -> None:
        self.service = service

    @unary
    async def SaveState(self, request: pb.SaveStateRequest, context: Ctx) -> pb.SaveStateResponse:
        def build(record: StateRecord) -> pb.SaveStateResponse:
            return pb.SaveStateResponse(state=state_version(record, with_document=False))

        result = await self.service.save(
            namespace(context),
            request.agent_id,
            request.document_json,
            expected_version=_expected(request),
            schema_version=request.schema_version,
            replay=replay(request, "SaveState", build),
        )
        return respond(result, pb.SaveStateResponse, build)

    @unary
    async def PatchState(
        self, request: pb.PatchStateRequest, context: Ctx
    ) -> pb.PatchStateResponse:
        def build(record: StateRecord) -> pb.PatchStateResponse:
            return pb.PatchStateResponse(state=state_version(record))

        result = await self.service.patch(
            namespace(context),
            request.agent_id,
            request.patch_json,
            expected_version=_expected(request),
            replay=replay(request, "PatchState", build),
        )
        return respond(result, pb.PatchStateResponse, build)

    @unary
    async def GetState(self, request: pb.GetStateRequest, context: Ctx) -> pb.GetStateResponse:
        selector = request.WhichOneof("selector")
        record = await self.service.get(
            namespace(context),
            request.agent_id,
            version=request.version if selector == "version" else None,
            as_of=convert.micros(request.as_of, "as_of") if selector == "as_of" else None,
        )
        return pb.GetStateResponse(state=state_version(record))

    @unary
    async def ListStateVersions(
        self, request: pb.ListStateVersionsRequest, context: Ctx
    ) -> pb.ListStateVersionsResponse:
        records, token = await self.service.list_versions(
            namespace(context),
            request.agent_id,
            include_documents=request.include_documents,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListStateVersionsResponse(
            versions=[state_version(r, with_document=request.include_documents) for r in records],
            next_page_token=token,
        )

    @unary
    async def ClearState(
        self, request: pb.ClearStateRequest, context: Ctx
    ) -> pb.ClearStateResponse:
        def build(deleted: int) -> pb.ClearStateResponse:
            return pb.ClearStateResponse(deleted_versions=deleted)

        result = await self.service.clear(
            namespace(context), request.agent_id, replay(request, "ClearState", build)
        )
        return respond(result, pb.ClearStateResponse, build)

    @unary
    async def BatchGetStates(
        self, request: pb.BatchGetStatesRequest, context: Ctx
    ) -> pb.BatchGetStatesResponse:
        records, missing = await self.service.batch_get(namespace(context), list(request.agent_ids))
        return pb.BatchGetStatesResponse(
            states=[state_version(r) for r in records], missing_agent_ids=missing
        )

    @unary
    async def MigrateStates(
        self, request: pb.MigrateStatesRequest, context: Ctx
    ) -> pb.MigrateStatesResponse:
        page = await self.service.migrate(
            namespace(context),
            request.agent_type,
            page_size=request.page_size,
            page_token=request.page_token,
            dry_run=request.dry_run,
        )
        return pb.MigrateStatesResponse(
            migrated=page.migrated,
            up_to_date=page.up_to_date,
            remaining=page.remaining,
            target_schema_version=page.target_schema_version,
            next_page_token=page.next_page_token,
            failures=[
                pb.MigrationFailure(
                    agent_id=f.agent_id, from_schema_version=f.from_version, message=f.problem
                )
                for f in page.failures
            ],
        )


def register(server: grpc.aio.Server, deps: Deps) -> None:
    servicer = StateServicer(state_service(deps))
    state_pb2_grpc.add_StateServiceServicer_to_server(servicer, server)
