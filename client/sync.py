"""The blocking client: opens a ``grpc`` channel and sends prepared calls on it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from ._base import BaseClient
from ._operation import Pages, Prepared, Rpc, ServerStream, Unary
from ._options import ClientOptions
from .models import Page

R = TypeVar("R")
T = TypeVar("T")


class Client(BaseClient):
    """A blocking Stateward client; safe to share between threads.

    ::

        with Client.connect("127.0.0.1:50051", namespace="team-a") as client:
            agent = client.create_agent("a1", "planner", config={"model": "m"})
            client.initialize_agent("a1")

    Every call takes keyword-only ``timeout=`` (seconds, retries included) and
    ``metadata=`` overrides; mutating calls take ``request_id=`` (generated
    when omitted, and reused by every retry). Failures raise the errors of
    ``stateward.client.errors``.
    """

    def _open_channel(self, options: ClientOptions) -> grpc.Channel:
        channel_options = options.grpc_channel_options()
        if options.tls is None:
            return grpc.insecure_channel(options.target, options=channel_options)
        credentials = options.tls.credentials()
        return grpc.secure_channel(options.target, credentials, options=channel_options)

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled. Closing twice is fine."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- sending --------------------------------------------------------------------

    def _send(self, rpc: Rpc, call: Prepared[R]) -> R:
        method = self._method(rpc)
        request_id = self._request_id(call)
        metadata = self._metadata(call, request_id)
        schedule = self._schedule(call)
        while True:
            try:
                response = method(call.request, timeout=schedule.next_timeout(), metadata=metadata)
            except grpc.RpcError as err:
                delay = schedule.retry_delay(err)
                if delay is None:
                    raise self._error(err, request_id) from err
                time.sleep(delay)
            else:
                return call.convert(response)

    def _stream(self, rpc: Rpc, call: Prepared[R | None]) -> Iterator[R]:
        request_id = self._request_id(call)
        responses = self._method(rpc)(
            call.request, timeout=call.timeout, metadata=self._metadata(call, request_id)
        )
        try:
            for response in responses:
                item = call.convert(response)
                if item is not None:
                    yield item
        except grpc.RpcError as err:
            raise self._error(err, request_id) from err
        finally:
            responses.cancel()  # the caller stopped early: end the RPC too

    def _pages(self, rpc: Rpc, call: Prepared[Page[T]]) -> Iterator[T]:
        while True:
            page = self._send(rpc, call)
            yield from page.items
            if not page.next_page_token:
                return
            call = call.with_page_token(page.next_page_token)

    # -- binding the operations (see _operation.py) ----------------------------------

    def _bind_unary(self, op: Unary[Any, R]) -> Callable[..., R]:
        def method(*args: Any, **kwargs: Any) -> R:
            return self._send(op.rpc, op.build(self, *args, **kwargs))

        return op.describe(method)

    def _bind_stream(self, op: ServerStream[Any, R]) -> Callable[..., Iterator[R]]:
        def method(*args: Any, **kwargs: Any) -> Iterator[R]:
            return self._stream(op.rpc, op.build(self, *args, **kwargs))

        return op.describe(method)

    def _bind_pages(self, op: Pages[Any, T]) -> Callable[..., Iterator[T]]:
        def method(*args: Any, **kwargs: Any) -> Iterator[T]:
            return self._pages(op.rpc, op.build(self, *args, **kwargs))

        return op.describe(method)
