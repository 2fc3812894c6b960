"""The call layer over a bare grpc.aio server: handlers registered in every way get it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from stateward.server import request_id, transport
from stateward.server.security.auth import Authorizer, generate_token, hash_token
from stateward.server.security.gate import AuthGate
from stateward.server.security.policy import OpenMethods

SERVICE = "test.Probe"
Request = health_pb2.HealthCheckRequest  # any message with a string field will do
MALFORMED = b"\x0a\x02\xff\xfe"  # field 1 (a string) holding invalid UTF-8
TOKEN = generate_token()


async def whoami(request: Any, context: grpc.aio.ServicerContext) -> bytes:
    call = request_id.current()
    assert call is not None
    return f"{call.request_id}|{request.service}|{call.principal}".encode()


async def replies(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(3):
        yield f"{request.service}-{i}".encode()


async def written(request: Any, context: grpc.aio.ServicerContext) -> None:
    for i in range(2):
        await context.write(f"w{i}".encode())


def not_async(request: Any, context: grpc.ServicerContext) -> bytes:  # a generated default
    raise NotImplementedError


# response_serializer=None: the handlers return bytes they encoded themselves.
HANDLERS = {
    "Who": grpc.unary_unary_rpc_method_handler(whoami, Request.FromString, None),
    "Replies": grpc.unary_stream_rpc_method_handler(replies, Request.FromString, None),
    "Written": grpc.unary_stream_rpc_method_handler(written, Request.FromString, None),
    "Sync": grpc.unary_unary_rpc_method_handler(not_async, Request.FromString, None),
}

Serve = Callable[..., Awaitable[grpc.aio.Channel]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[transport.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def start(layer: transport.CallLayer, **handlers: grpc.RpcMethodHandler) -> Any:
        server = transport.Server(grpc.aio.server(), layer)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, handlers or HANDLERS)]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        return channels[-1]

    yield start
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(None)


def method(channel: grpc.aio.Channel, name: str, streaming: bool = False) -> Any:
    factory = channel.unary_stream if streaming else channel.unary_unary
    return factory(f"/{SERVICE}/{name}")


async def test_a_generic_handler_gets_the_call_layer(serve: Serve) -> None:
    channel = await serve(transport.CallLayer())
    who = method(channel, "Who")
    reply = await who(Request(service="s").SerializeToString(), metadata=[("x-request-id", "r-1")])
    assert reply == b"r-1|s|None"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await who(MALFORMED)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid Who message" in (caught.value.details() or "")


async def test_streams_from_generators_and_from_context_write(serve: Serve) -> None:
    channel = await serve(transport.CallLayer())
    request = Request(service="s").SerializeToString()
    assert [r async for r in method(channel, "Replies", True)(request)] == [
        b"s-0",
        b"s-1",
        b"s-2",
    ]
    assert [r async for r in method(channel, "Written", True)(request)] == [b"w0", b"w1"]


async def test_a_cancelled_stream_closes_its_generator_at_once(serve: Serve) -> None:
    closed = asyncio.Event()

    async def endless(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick"
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    handler = grpc.unary_stream_rpc_method_handler(endless, Request.FromString, None)
    channel = await serve(transport.CallLayer(), Endless=handler)
    call = method(channel, "Endless", True)(b"")
    assert await call.read() == b"tick"
    call.cancel()
    await asyncio.wait_for(closed.wait(), 10)


async def test_registered_method_handlers_are_served_and_take_precedence() -> None:
    async def registered(request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return b"registered"

    server = transport.Server(grpc.aio.server(), transport.CallLayer())
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, HANDLERS)])
    server.add_registered_method_handlers(
        SERVICE, {"Who": grpc.unary_unary_rpc_method_handler(registered, None, None)}
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await method(channel, "Who")(b"") == b"registered"
            reply = await method(channel, "Who")(b"", metadata=[("x-request-id", "r-2")])
            assert reply == b"registered"
    finally:
        await server.stop(None)


async def test_a_sync_handler_is_unimplemented(serve: Serve) -> None:
    channel = await serve(transport.CallLayer())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(channel, "Sync")(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_unknown_methods_are_unimplemented(serve: Serve) -> None:
    channel = await serve(transport.CallLayer())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(channel, "Nope")(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_auth_refuses_before_parsing_and_open_methods_pass(
    serve: Serve, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[tokens]]\nname = "admin"\nhash = "{hash_token(TOKEN)}"\n'
        'role = "admin"\nnamespaces = "*"\n'
    )
    gate = AuthGate(Authorizer(str(tokens)), OpenMethods(f"/{SERVICE}/Replies"))
    channel = await serve(transport.CallLayer(gate=gate))
    who = method(channel, "Who")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await who(MALFORMED)  # refused for the missing token, not for the bytes
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    bearer = [("authorization", f"Bearer {TOKEN}"), ("x-request-id", "r-3")]
    assert await who(Request(service="s").SerializeToString(), metadata=bearer) == b"r-3|s|admin"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await who(MALFORMED, metadata=bearer)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [r async for r in method(channel, "Replies", True)(b"")] == [b"-0", b"-1", b"-2"]
