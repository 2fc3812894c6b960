"""Malformed request bytes are INVALID_ARGUMENT, not UNKNOWN.

grpc parses a request before any handler runs; a parse failure (corrupt wire
format, a string field that is not UTF-8) surfaces as UNKNOWN "Unexpected
DecodeError". The transport layer (``server/transport.py``) hands grpc no request
deserializer and parses the raw bytes inside the call with these helpers, so such
input gets an answer a client can act on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

# What a protobuf FromString raises on bytes it cannot parse.
DECODE_ERRORS = (DecodeError, UnicodeDecodeError, ValueError)


async def refuse(context: grpc.aio.ServicerContext, method: str, error: Exception) -> NoReturn:
    """Abort the call with INVALID_ARGUMENT for a request of ``method`` that did not parse."""
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request is not a valid {method} message ({error}); "
        "send it as the message type the method's proto declares",
    )


async def parsed(
    raw: AsyncIterator[bytes],
    parse: Callable[[bytes], Any],
    method: str,
    context: grpc.aio.ServicerContext,
) -> AsyncIterator[Any]:
    """A request stream's messages, parsed one by one as the handler reads them."""
    async for item in raw:
        try:
            message = parse(item)
        except DECODE_ERRORS as error:
            await refuse(context, method, error)
        yield message
