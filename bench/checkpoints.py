"""Checkpoint transfer: UploadCheckpoint / DownloadCheckpoint vs a bare byte stream.

Both sides get the same client work: the bare upload sends one prebuilt 1 MiB block over
and over, and the Stateward upload one prebuilt ``UploadCheckpointRequest`` carrying that
block (encoded once, sent with no serializer: the wire bytes are the same as the stub's).
Building and encoding a fresh 1 MiB protobuf per chunk costs this client ~1-2 ms of CPU
per MiB (upb's encoder in fresh allocations), which on 2 shared cores would be measured
as server slowness. The upload's metadata announces the payload's sha256, as the client
library does for bytes and files; it is computed before the clock starts. Downloads are
received as raw messages like the bare ones: the manifest is parsed, each chunk message
is counted without a copy (its tag and length prefix skipped), where parsing it would
copy each MiB twice on a core the server needs.

Each transfer opens its channel and moves a small warm-up payload first (connection,
first-call costs). ``run.py`` alternates disk, bare and Stateward rounds and keeps the
fastest of each (:func:`best`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc

from bench import procstat
from bench.disk import MiB, evict
from bench.loadgen import CHANNEL_OPTIONS
from stateward.v1 import recovery_pb2, recovery_pb2_grpc

CHUNK = 1 * MiB
WARM_UP = 4 * MiB
UPLOAD = "/stateward.v1.RecoveryService/UploadCheckpoint"
DOWNLOAD = "/stateward.v1.RecoveryService/DownloadCheckpoint"


async def _chunks(total: int, block: bytes) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = block if total - sent >= len(block) else block[: total - sent]
        sent += len(piece)
        yield piece


def _chunk_request(piece: bytes) -> bytes:
    return recovery_pb2.UploadCheckpointRequest(chunk=piece).SerializeToString()


def _payload_sha256(total: int, block: bytes) -> str:
    """The sha256 of the payload ``_upload_requests`` sends."""
    digest = hashlib.sha256()
    for _ in range(total // len(block)):
        digest.update(block)
    digest.update(block[: total % len(block)])
    return digest.hexdigest()


def _payload_length(message: bytes) -> int:
    """The chunk length of an encoded ``DownloadCheckpointResponse`` carrying a chunk: the
    message minus its tag byte and varint length prefix."""
    at = 1
    while message[at] & 0x80:
        at += 1
    return len(message) - at - 1


async def _upload_requests(
    agent_id: str, total: int, block: bytes, sha256: str
) -> AsyncIterator[bytes]:
    """The encoded messages of an upload: metadata, then ``total`` bytes of chunks."""
    yield recovery_pb2.UploadCheckpointRequest(
        metadata=recovery_pb2.UploadCheckpointMetadata(agent_id=agent_id, sha256=sha256)
    ).SerializeToString()
    whole = _chunk_request(block)
    for _ in range(total // len(block)):
        yield whole
    if total % len(block):
        yield _chunk_request(block[: total % len(block)])


async def stateward_transfer(
    target: str,
    agent_id: str,
    total: int,
    server_pid: int,
    data_dir: Path | None,
) -> dict[str, Any]:
    """Upload then download ``total`` bytes (after a warm-up transfer)."""
    block = os.urandom(CHUNK)
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = recovery_pb2_grpc.RecoveryServiceStub(channel)
        upload = channel.stream_unary(
            UPLOAD, response_deserializer=recovery_pb2.UploadCheckpointResponse.FromString
        )
        download = channel.unary_stream(
            DOWNLOAD, request_serializer=recovery_pb2.DownloadCheckpointRequest.SerializeToString
        )

        async def one(size: int, evicted: Path | None) -> dict[str, Any]:
            sha256 = _payload_sha256(size, block)
            with procstat.RssSampler(server_pid) as upload_rss:
                t0 = time.perf_counter()
                reply = await upload(_upload_requests(agent_id, size, block, sha256))
                upload_s = time.perf_counter() - t0
            checkpoint_id = reply.checkpoint.checkpoint_id
            if evicted is not None:  # read from the disk, like the raw read it is compared with
                for path in (evicted / "checkpoints").rglob("*"):
                    if path.is_file():
                        evict(path)
            received = 0
            with procstat.RssSampler(server_pid) as download_rss:
                t0 = time.perf_counter()
                messages = aiter(
                    download(recovery_pb2.DownloadCheckpointRequest(checkpoint_id=checkpoint_id))
                )
                manifest = recovery_pb2.DownloadCheckpointResponse.FromString(await anext(messages))
                async for message in messages:
                    received += _payload_length(message)
                download_s = time.perf_counter() - t0
            if manifest.checkpoint.sha256 != sha256:
                raise RuntimeError("the checkpoint's manifest does not have the payload's sha256")
            if received != size:
                raise RuntimeError(f"downloaded {received} bytes, uploaded {size}")
            await stub.DeleteCheckpoint(
                recovery_pb2.DeleteCheckpointRequest(checkpoint_id=checkpoint_id)
            )
            return {
                "bytes": size,
                "upload_MiBps": size / MiB / upload_s,
                "download_MiBps": size / MiB / download_s,
                "upload_rss_growth_MiB": upload_rss.growth / MiB,
                "download_rss_growth_MiB": download_rss.growth / MiB,
                "rss_baseline_MiB": upload_rss.baseline / MiB,
            }

        await one(WARM_UP, None)
        return await one(total, data_dir)


async def bare_transfer(target: str, total: int) -> dict[str, Any]:
    block = os.urandom(CHUNK)
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        upload = channel.stream_unary("/bench.Echo/Upload")
        download = channel.unary_stream("/bench.Echo/Download")

        async def one(size: int) -> dict[str, Any]:
            t0 = time.perf_counter()
            count = int(await upload(_chunks(size, block)))
            upload_s = time.perf_counter() - t0
            assert count == size
            received = 0
            t0 = time.perf_counter()
            async for piece in download(f"{size},{CHUNK}".encode()):
                received += len(piece)
            download_s = time.perf_counter() - t0
            assert received == size
            return {
                "bytes": size,
                "upload_MiBps": size / MiB / upload_s,
                "download_MiBps": size / MiB / download_s,
            }

        await one(WARM_UP)
        return await one(total)


def best(rounds: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The fastest upload and download of the rounds (the least disturbed by neighbours),
    the largest RSS growths; every round is kept under ``rounds``."""
    runs = list(rounds)
    merged: dict[str, Any] = dict(runs[0])
    for key in merged:
        if key.endswith("_MiBps") or key.endswith("_growth_MiB"):
            merged[key] = max(run[key] for run in runs)
    merged["rounds"] = runs
    return merged


def run_stateward(*args: Any) -> dict[str, Any]:
    return asyncio.run(stateward_transfer(*args))


def run_bare(target: str, total: int) -> dict[str, Any]:
    return asyncio.run(bare_transfer(target, total))
