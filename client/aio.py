"""The asyncio client: opens a ``grpc.aio`` channel and awaits prepared calls on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

from ._base import BaseClient
from ._operation import Pages, Prepared, Rpc, ServerStream, Unary
from ._options import ClientOptions
from .models import Page

R = TypeVar("R")
T = TypeVar("T")


class AsyncClient(BaseClient):
    """An asyncio Stateward client; use it from the event loop that created it.

    ::

        async with AsyncClient.connect("127.0.0.1:50051") as client:
            agent = await client.get_agent("a1")
            async for event in client.subscribe_events(agent_id="a1"):
                ...

    The same methods as ``Client``, awaited; ``iter_*`` and
    ``subscribe_events`` are async iterators.
    """

    def _open_channel(self, options: ClientOptions) -> grpc.aio.Channel:
        channel_options = options.grpc_channel_options()
        if options.tls is None:
            return grpc.aio.insecure_channel(options.target, options=channel_options)
        credentials = options.tls.credentials()
        return grpc.aio.secure_channel(options.target, credentials, options=channel_options)

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled. Closing twice is fine."""
        if not self._closed:
            self._closed = True
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- sending --------------------------------------------------------------------

    async def _send(self, rpc: Rpc, call: Prepared[R]) -> R:
        method = self._method(rpc)
        request_id = self._request_id(call)
        metadata = self._metadata(call, request_id)
        schedule = self._schedule(call)
        while True:
            try:
                response = await method(
                    call.request, timeout=schedule.next_timeout(), metadata=metadata
                )
            except grpc.RpcError as err:
                delay = schedule.retry_delay(err)
                if delay is None:
                    raise self._error(err, request_id) from err
                await asyncio.sleep(delay)
            else:
                return call.convert(response)

    async def _stream(self, rpc: Rpc, call: Prepared[R | None]) -> AsyncIterator[R]:
        request_id = self._request_id(call)
        responses = self._method(rpc)(
            call.request, timeout=call.timeout, metadata=self._metadata(call, request_id)
        )
        try:
            async for response in responses:
                item = call.convert(response)
                if item is not None:
                    yield item
        except grpc.RpcError as err:
            raise self._error(err, request_id) from err
        finally:
            responses.cancel()  # the caller stopped early: end the RPC too

    async def _pages(self, rpc: Rpc, call: Prepared[Page[T]]) -> AsyncIterator[T]:
        while True:
            page = await self._send(rpc, call)
            for item in page.items:
                yield item
            if not page.next_page_token:
                return
            call = call.with_page_token(page.next_page_token)

    # -- binding the operations (see _operation.py) ----------------------------------

    def _bind_unary(self, op: Unary[Any, R]) -> Callable[..., Coroutine[Any, Any, R]]:
        async def method(*args: Any, **kwargs: Any) -> R:
            return await self._send(op.rpc, op.build(self, *args, **kwargs))

        return op.describe(method)

    def _bind_stream(self, op: ServerStream[Any, R]) -> Callable[..., AsyncIterator[R]]:
        def method(*args: Any, **kwargs: Any) -> AsyncIterator[R]:
            return self._stream(op.rpc, op.build(self, *args, **kwargs))

        return op.describe(method)

    def _bind_pages(self, op: Pages[Any, T]) -> Callable[..., AsyncIterator[T]]:
        def method(*args: Any, **kwargs: Any) -> AsyncIterator[T]:
            return self._pages(op.rpc, op.build(self, *args, **kwargs))

        return op.describe(method)
