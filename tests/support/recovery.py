"""Raw-stub clients for the recovery tests: one channel, one namespace, the blob store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from stateward.server.config import Settings
from stateward.storage.blobs import BlobStore, blob_key
from stateward.v1 import (
    execution_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
    recovery_pb2,
    recovery_pb2_grpc,
    state_pb2,
    state_pb2_grpc,
)
from tests.support.s3 import S3Endpoint
from tests.support.server import ServerThread

pb = recovery_pb2
MiB = 1 << 20


class _Namespaced(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
):
    """Adds the ``x-stateward-namespace`` metadata to every call."""

    def __init__(self, namespace: str) -> None:
        self.metadata = (("x-stateward-namespace", namespace),)

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=tuple(details.metadata or ()) + self.metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class Client:
    """Raw stubs over one channel in one namespace, plus the server's blob store."""

    def __init__(self, target: str, settings: Settings, namespace: str = "default") -> None:
        self.namespace = namespace
        self.raw_channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", 64 * MiB),
                ("grpc.max_receive_message_length", 64 * MiB),
            ],
        )
        self.channel = grpc.intercept_channel(self.raw_channel, _Namespaced(namespace))
        self.recovery = recovery_pb2_grpc.RecoveryServiceStub(self.channel)
        self.lifecycle = lifecycle_pb2_grpc.LifecycleServiceStub(self.channel)
        self.state = state_pb2_grpc.StateServiceStub(self.channel)
        self.execution = execution_pb2_grpc.ExecutionServiceStub(self.channel)
        options = json.loads(settings.blob_options) if settings.blob_options else {}
        self.blobs = BlobStore(settings.resolved_blob_url, storage_options=options)

    def key(self, agent_id: str, checkpoint_id: str) -> str:
        return blob_key(self.namespace, agent_id, checkpoint_id)

    def agent(self, agent_id: str = "agent-1", state: dict[str, Any] | None = None) -> str:
        self.lifecycle.CreateAgent(lifecycle_pb2.CreateAgentRequest(agent_id=agent_id, type="t"))
        if state is not None:
            self.save(agent_id, state)
        return agent_id

    def save(self, agent_id: str, state: dict[str, Any]) -> int:
        reply = self.state.SaveState(
            state_pb2.SaveStateRequest(agent_id=agent_id, document_json=json.dumps(state).encode())
        )
        return int(reply.state.version)

    def create(self, agent_id: str, payload: bytes = b"", **extra: Any) -> pb.Checkpoint:
        request = pb.CreateCheckpointRequest(agent_id=agent_id, payload=payload, **extra)
        return self.recovery.CreateCheckpoint(request).checkpoint

    def upload(self, agent_id: str, chunks: Any, **meta: Any) -> pb.Checkpoint:
        return self.recovery.UploadCheckpoint(upload_messages(agent_id, chunks, **meta)).checkpoint

    def download(self, checkpoint_id: str) -> tuple[pb.Checkpoint, bytes]:
        stream = self.recovery.DownloadCheckpoint(
            pb.DownloadCheckpointRequest(checkpoint_id=checkpoint_id)
        )
        first = next(stream)
        assert first.WhichOneof("item") == "checkpoint"
        return first.checkpoint, b"".join(message.chunk for message in stream)

    def keys(self, *, temporary: bool = False) -> list[str]:
        """The blobs of this client's namespace (and the temporary ones, if asked)."""
        areas = [self.namespace, ".tmp"] if temporary else [self.namespace]
        return sorted(blob.key for area in areas for blob in self.blobs.list(area))

    def close(self) -> None:
        self.raw_channel.close()


def upload_messages(
    agent_id: str, chunks: Any, **meta: Any
) -> Iterator[pb.UploadCheckpointRequest]:
    yield pb.UploadCheckpointRequest(
        metadata=pb.UploadCheckpointMetadata(agent_id=agent_id, **meta)
    )
    for chunk in chunks:
        yield pb.UploadCheckpointRequest(chunk=chunk)


def blob_settings(kind: str, settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """``settings`` with blobs on ``kind`` (file, memory or s3): a fresh root or bucket.

    s3 needs a fixture named ``s3`` (an ``S3Endpoint``) visible to the requesting test.
    """
    if kind == "file":
        return replace(settings, blob_url=f"file://{Path(settings.data_dir) / 'blobs'}")
    if kind == "memory":
        return replace(settings, blob_url=f"memory://ckpt-{uuid.uuid4().hex}")
    s3: S3Endpoint = request.getfixturevalue("s3")
    return replace(
        settings, blob_url=f"s3://{s3.bucket()}/checkpoints", blob_options=s3.options_json
    )


def start_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    database: str,
    backend: str,
    **overrides: Any,
) -> ServerThread:
    """A server on a fresh database (``sqlite`` or ``postgres``) with blobs on ``backend``."""
    root = tmp_path_factory.mktemp(f"srv-{database}-{backend}")
    if database == "sqlite":
        url = f"sqlite:///{root / 'stateward.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    base = Settings(
        listen="127.0.0.1:0",
        data_dir=str(root / "data"),
        database_url=url,
        grace_period=0.5,
        log_level="WARNING",
        retention_interval=0,
    )
    return ServerThread(replace(blob_settings(backend, base, request), **overrides)).start()
