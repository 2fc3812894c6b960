"""Bare grpc.aio servers that bound what Python gRPC can do on this machine.

One process serves four generic methods with bytes-identity serializers (no
protobuf, no interceptors, no logging), so each is the transport's ceiling:

- ``/bench.Echo/Unary``: returns the request (the echo ceiling, 200-byte messages).
- ``/bench.Echo/Stream``: request ``b"<size>,<seconds>"``; streams ``size``-byte
  messages as fast as the client takes them, for ``seconds`` (fan-out ceiling).
- ``/bench.Echo/Upload``: client-streamed bytes; answers the byte count.
- ``/bench.Echo/Download``: request ``b"<total>,<chunk>"``; streams that many bytes.

Run ``python -m bench.echo_server`` (prints ``PORT <n>`` once serving). It runs on the
event loop the Stateward server picks by default (uvloop when installed), so every
ceiling is measured on the same loop as the figure it bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator

import grpc

from stateward.server.main import loop_factory

SERVICE = "bench.Echo"
OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    size, seconds = request.decode().split(",")
    message = b"x" * int(size)
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        yield message


async def upload(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    total = 0
    async for chunk in requests:
        total += len(chunk)
    return str(total).encode()


async def download(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    total, chunk = (int(x) for x in request.decode().split(","))
    block = b"\0" * chunk
    sent = 0
    while sent < total:
        piece = block if total - sent >= chunk else block[: total - sent]
        sent += len(piece)
        yield piece


def handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
            "Download": grpc.unary_stream_rpc_method_handler(download),
        },
    )


async def main(listen: str) -> None:
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((handler(),))
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"PORT {port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--event-loop", default="auto", choices=("auto", "uvloop", "asyncio"))
    args = parser.parse_args()
    try:
        with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
            runner.run(main(args.listen))
    except KeyboardInterrupt:
        sys.exit(0)
