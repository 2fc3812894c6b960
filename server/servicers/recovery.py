"""RecoveryService over gRPC."""

from __future__ import annotations

import grpc

from stateward.server.deps import Deps
from stateward.server.servicers.pending import pending_servicer
from stateward.v1 import recovery_pb2_grpc


def register(server: grpc.aio.Server, deps: Deps) -> None:
    servicer = pending_servicer(recovery_pb2_grpc.RecoveryServiceServicer, "checkpoints and recovery")
    recovery_pb2_grpc.add_RecoveryServiceServicer_to_server(servicer, server)
