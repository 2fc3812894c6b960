"""ExecutionService over gRPC."""

from __future__ import annotations

import grpc

from stateward.server.deps import Deps
from stateward.server.servicers.pending import pending_servicer
from stateward.v1 import execution_pb2_grpc


def register(server: grpc.aio.Server, deps: Deps) -> None:
    servicer = pending_servicer(execution_pb2_grpc.ExecutionServiceServicer, "execution history")
    execution_pb2_grpc.add_ExecutionServiceServicer_to_server(servicer, server)
