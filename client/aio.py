"""The asyncio client: opens a ``grpc.aio`` channel and awaits prepared calls on it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from datetime import timedelta
from types import TracebackType
from typing import IO, Any, Self, TypeVar, Unpack, overload

import grpc
import grpc.aio

from ._base import BaseClient
from ._operation import Flow, FlowMethod, Pages, Prepared, Rpc, ServerStream, Sleep, Unary
from ._options import Backoff, ClientOptions, MetadataLike
from ._run_tracking import AsyncRunTracker, RunTrackOptions
from ._subscribe import SUBSCRIBE, Keepalive, Resumer
from ._tracking import AsyncTaskTracker, TrackOptions
from ._transfer import (
    DEFAULT_CHUNK,
    DOWNLOAD,
    UPLOAD,
    Destination,
    Progress,
    Upload,
    UploadSource,
    download_call,
    open_download,
)
from .errors import StatewardError
from .models import Checkpoint, Event, Page

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

    async def _stream(self, rpc: Rpc, call: Prepared[R | None]) -> AsyncGenerator[R, None]:
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

    async def _run(
        self, flow: Flow[R], sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    ) -> R:
        """Drive a flow (see ``_operation.py``): await its calls and its sleeps."""
        reply: Any = None
        error: StatewardError | None = None
        try:
            while True:
                try:
                    step = flow.send(reply) if error is None else flow.throw(error)
                except StopIteration as done:
                    result: R = done.value
                    return result
                reply, error = None, None
                if isinstance(step, Sleep):
                    await sleep(step.seconds)
                    continue
                try:
                    reply = await self._send(step.rpc, step.prepared)
                except StatewardError as exc:
                    error = exc
        finally:
            flow.close()

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

    def _bind_flow(self, op: FlowMethod[Any, R]) -> Callable[..., Coroutine[Any, Any, R]]:
        async def method(*args: Any, **kwargs: Any) -> R:
            return await self._run(op.build(self, *args, **kwargs))

        return op.describe(method)

    # -- methods made of streams and background work ---------------------------------
    # Their logic lives in _subscribe, _tracking and _transfer, shared with Client.

    def subscribe(
        self,
        agent_id: str = "",
        run_id: str = "",
        task_run_id: str = "",
        types: Iterable[str] = (),
        after_sequence: int = 0,
        from_head: bool = False,
        *,
        keepalive_interval: timedelta | float | None = None,
        reconnect: Backoff | None = None,
        metadata: MetadataLike = (),
    ) -> AsyncGenerator[Event, None]:
        """``async for event in client.subscribe(...)``: see ``Client.subscribe``."""
        cursor = Resumer(
            agent_id=agent_id,
            run_id=run_id,
            task_run_id=task_run_id,
            types=types,
            after_sequence=after_sequence,
            from_head=from_head,
            keepalive_interval=keepalive_interval,
            reconnect=reconnect,
            metadata=metadata,
        )
        return self._follow(cursor)

    async def _follow(self, cursor: Resumer) -> AsyncGenerator[Event, None]:
        while True:
            error: StatewardError | None = None
            stream: AsyncGenerator[Event | Keepalive] = self._stream(SUBSCRIBE, cursor.prepared())
            try:
                async for item in stream:
                    event = cursor.accept(item)
                    if event is not None:
                        yield event
            except StatewardError as exc:
                error = exc
            finally:
                await stream.aclose()
            if self._closed:
                return
            await asyncio.sleep(cursor.retry_delay(error))

    def track_task(
        self, run_id: str, task_id: str, agent_id: str, **options: Unpack[TrackOptions]
    ) -> AsyncTaskTracker:
        """``async with client.track_task(...) as task:``: see ``Client.track_task``;
        the background work runs in an asyncio task."""
        return AsyncTaskTracker(self, run_id, task_id, agent_id, options)

    def track_run(self, workflow_name: str, **options: Unpack[RunTrackOptions]) -> AsyncRunTracker:
        """``async with client.track_run(...) as run:``: see ``Client.track_run``; the
        heartbeats go out from an asyncio task."""
        return AsyncRunTracker(self, workflow_name, options)

    async def upload_checkpoint(
        self,
        agent_id: str,
        source: UploadSource | AsyncIterable[bytes],
        *,
        labels: Mapping[str, str] | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        request_id: str | None = None,
        progress: Progress | None = None,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Checkpoint:
        """See ``Client.upload_checkpoint``; ``source`` may also be an async iterable of
        bytes. Files are read in a worker thread."""
        upload = Upload(agent_id, source, labels, chunk_size, request_id, progress)
        if upload.reads_files:
            await asyncio.to_thread(upload.prepare)
        else:
            upload.prepare()
        call = upload.prepared(upload.async_messages(), timeout, metadata)
        method = self._method(UPLOAD)
        assert call.request_id is not None
        try:
            response = await method(
                call.request, timeout=call.timeout, metadata=self._metadata(call, call.request_id)
            )
        except (grpc.RpcError, asyncio.CancelledError) as err:
            if upload.failure is not None:  # reading the source failed: that is the story
                raise upload.failure from None
            if isinstance(err, asyncio.CancelledError):
                raise
            raise self._error(err, call.request_id) from err
        return call.convert(response)

    @overload
    async def download_checkpoint(
        self,
        checkpoint_id: str,
        dest: None = None,
        *,
        progress: Progress | None = None,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> bytes: ...
    @overload
    async def download_checkpoint(
        self,
        checkpoint_id: str,
        dest: str | os.PathLike[str] | IO[bytes],
        *,
        progress: Progress | None = None,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Checkpoint: ...
    async def download_checkpoint(
        self,
        checkpoint_id: str,
        dest: Destination = None,
        *,
        progress: Progress | None = None,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> bytes | Checkpoint:
        """See ``Client.download_checkpoint``; file writes run in a worker thread."""
        sink = open_download(checkpoint_id, dest, progress)
        stream: AsyncIterator[Checkpoint | bytes] = self._stream(
            DOWNLOAD, download_call(checkpoint_id, timeout, metadata)
        )
        try:
            async for item in stream:
                if sink.writes_files:
                    await asyncio.to_thread(sink.feed, item)
                else:
                    sink.feed(item)
            if sink.writes_files:
                return await asyncio.to_thread(sink.finish)
            return sink.finish()
        except BaseException:
            sink.abort()
            raise
