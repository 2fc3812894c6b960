"""StateService over gRPC."""

from __future__ import annotations

import grpc

from stateward.server.deps import Deps
from stateward.server.servicers.pending import pending_servicer
from stateward.v1 import state_pb2_grpc


def register(server: grpc.aio.Server, deps: Deps) -> None:
    servicer = pending_servicer(state_pb2_grpc.StateServiceServicer, "versioned agent state")
    state_pb2_grpc.add_StateServiceServicer_to_server(servicer, server)
