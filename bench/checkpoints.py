"""Checkpoint transfer: UploadCheckpoint / DownloadCheckpoint vs a bare byte stream."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from bench import procstat
from bench.disk import MiB, evict
from bench.loadgen import CHANNEL_OPTIONS
from stateward.v1 import recovery_pb2, recovery_pb2_grpc

CHUNK = 1 * MiB


async def _chunks(total: int, block: bytes) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = block if total - sent >= len(block) else block[: total - sent]
        sent += len(piece)
        yield piece


async def stateward_transfer(
    target: str, agent_id: str, total: int, server_pid: int, data_dir: Path | None
) -> dict[str, Any]:
    block = os.urandom(CHUNK)
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = recovery_pb2_grpc.RecoveryServiceStub(channel)

        async def requests() -> AsyncIterator[recovery_pb2.UploadCheckpointRequest]:
            yield recovery_pb2.UploadCheckpointRequest(
                metadata=recovery_pb2.UploadCheckpointMetadata(agent_id=agent_id)
            )
            async for piece in _chunks(total, block):
                yield recovery_pb2.UploadCheckpointRequest(chunk=piece)

        with procstat.RssSampler(server_pid) as upload_rss:
            t0 = time.perf_counter()
            reply = await stub.UploadCheckpoint(requests())
            upload_s = time.perf_counter() - t0
        checkpoint_id = reply.checkpoint.checkpoint_id
        if data_dir is not None:  # read from the disk, like the raw read it is compared with
            for path in (data_dir / "checkpoints").rglob("*"):
                if path.is_file():
                    evict(path)
        received = 0
        with procstat.RssSampler(server_pid) as download_rss:
            t0 = time.perf_counter()
            async for item in stub.DownloadCheckpoint(
                recovery_pb2.DownloadCheckpointRequest(checkpoint_id=checkpoint_id)
            ):
                received += len(item.chunk)
            download_s = time.perf_counter() - t0
        if received != total:
            raise RuntimeError(f"downloaded {received} bytes, uploaded {total}")
        await stub.DeleteCheckpoint(
            recovery_pb2.DeleteCheckpointRequest(checkpoint_id=checkpoint_id)
        )
    return {
        "bytes": total,
        "upload_MiBps": total / MiB / upload_s,
        "download_MiBps": total / MiB / download_s,
        "upload_rss_growth_MiB": upload_rss.growth / MiB,
        "download_rss_growth_MiB": download_rss.growth / MiB,
        "rss_baseline_MiB": upload_rss.baseline / MiB,
    }


async def bare_transfer(target: str, total: int) -> dict[str, Any]:
    block = os.urandom(CHUNK)
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        upload = channel.stream_unary("/bench.Echo/Upload")
        t0 = time.perf_counter()
        count = int(await upload(_chunks(total, block)))
        upload_s = time.perf_counter() - t0
        assert count == total
        download = channel.unary_stream("/bench.Echo/Download")
        received = 0
        t0 = time.perf_counter()
        async for piece in download(f"{total},{CHUNK}".encode()):
            received += len(piece)
        download_s = time.perf_counter() - t0
    return {
        "bytes": total,
        "upload_MiBps": total / MiB / upload_s,
        "download_MiBps": total / MiB / download_s,
    }


def run_stateward(*args: Any) -> dict[str, Any]:
    return asyncio.run(stateward_transfer(*args))


def run_bare(target: str, total: int) -> dict[str, Any]:
    return asyncio.run(bare_transfer(target, total))
