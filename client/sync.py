"""The blocking client: opens a ``grpc`` channel and sends prepared calls on it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from datetime import timedelta
from types import TracebackType
from typing import IO, Any, Self, TypeVar, Unpack, overload

import grpc

from ._base import BaseClient
from ._operation import Flow, FlowMethod, Pages, Prepared, Rpc, ServerStream, Sleep, Unary
from ._options import Backoff, ClientOptions, MetadataLike
from ._run_tracking import RunTracker, RunTrackOptions
from ._subscribe import SUBSCRIBE, Keepalive, Resumer
from ._tracking import TaskTracker, TrackOptions
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
from .errors import StatewardError, UsageError
from .models import Checkpoint, Event, Page

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

    def _stream(self, rpc: Rpc, call: Prepared[R | None]) -> Generator[R, None, None]:
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

    def _run(self, flow: Flow[R], sleep: Callable[[float], object] = time.sleep) -> R:
        """Drive a flow (see ``_operation.py``): send its calls, wait its sleeps."""
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
                    sleep(step.seconds)
                    continue
                try:
                    reply = self._send(step.rpc, step.prepared)
                except StatewardError as exc:
                    error = exc
        finally:
            flow.close()

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

    def _bind_flow(self, op: FlowMethod[Any, R]) -> Callable[..., R]:
        def method(*args: Any, **kwargs: Any) -> R:
            return self._run(op.build(self, *args, **kwargs))

        return op.describe(method)

    # -- methods made of streams and background work ---------------------------------
    # Their logic lives in _subscribe, _tracking and _transfer, shared with AsyncClient.

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
    ) -> Generator[Event, None, None]:
        """Follow matching events, resubscribing by itself after a disconnect or a
        server restart: each event once, in sequence order, nothing skipped.

        Starts after ``after_sequence`` (0: the whole log) or, with ``from_head``,
        at the newest event. Runs until the caller stops iterating or closes the
        client; errors other than transport trouble (a bad filter...) are raised.
        ``reconnect`` spaces the attempts to reconnect.
        """
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

    def _follow(self, cursor: Resumer) -> Generator[Event, None, None]:
        while True:
            error: StatewardError | None = None
            stream: Generator[Event | Keepalive] = self._stream(SUBSCRIBE, cursor.prepared())
            try:
                for item in stream:
                    event = cursor.accept(item)
                    if event is not None:
                        yield event
            except StatewardError as exc:
                error = exc
            finally:
                stream.close()
            if self._closed:
                return
            time.sleep(cursor.retry_delay(error))

    def track_task(
        self, run_id: str, task_id: str, agent_id: str, **options: Unpack[TrackOptions]
    ) -> TaskTracker:
        """Run a block as a task run of ``run_id``: ``with client.track_task(...) as task:``.

        Entering starts the task run; heartbeats and ``task.log(type, data)`` events
        go out from a background thread; leaving completes it with ``task.result``,
        or, when an exception escapes, fails it with the exception's type and
        message (kind from ``ERROR_KINDS``) and re-raises. ``task.cancel_requested``
        turns true once the run is cancelled. Options: see ``TrackOptions``.
        """
        return TaskTracker(self, run_id, task_id, agent_id, options)

    def track_run(self, workflow_name: str, **options: Unpack[RunTrackOptions]) -> RunTracker:
        """Run a block as a workflow run: ``with client.track_run("ingest") as run:``.

        Entering starts the run with a heartbeat timeout (default 60 s) and heartbeats
        it from a background thread, so the server marks it INTERRUPTED if this process
        dies; leaving completes it with ``run.result``, or, when an exception escapes,
        fails it (kind from ``ERROR_KINDS``) and re-raises. ``run.cancel_requested``
        turns true once the run is cancelled or interrupted. ``run_id=`` takes over a
        RUNNING run (e.g. the attempt ``retry_workflow_run`` started) instead of
        starting one. Options: see ``RunTrackOptions``.
        """
        return RunTracker(self, workflow_name, options)

    def upload_checkpoint(
        self,
        agent_id: str,
        source: UploadSource,
        *,
        labels: Mapping[str, str] | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        request_id: str | None = None,
        progress: Progress | None = None,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Checkpoint:
        """Store a checkpoint of the agent with a payload of any size, streamed in chunks.

        ``source``: bytes, a file path, a binary file object or an iterable of byte
        chunks. Bytes, paths and seekable files are hashed first and the server
        refuses a payload that does not match (``DataLoss``); other sources are
        checked against the stored manifest. ``progress(sent, total)`` follows the
        upload. Not retried (a stream cannot be replayed); no deadline unless
        ``timeout``.
        """
        upload = Upload(agent_id, source, labels, chunk_size, request_id, progress)
        if upload.async_source is not None:
            raise UsageError("an async iterable source needs AsyncClient.upload_checkpoint")
        upload.prepare()
        call = upload.prepared(upload.messages(), timeout, metadata)
        method = self._method(UPLOAD)
        assert call.request_id is not None
        try:
            response = method(
                call.request, timeout=call.timeout, metadata=self._metadata(call, call.request_id)
            )
        except grpc.RpcError as err:
            if upload.failure is not None:  # reading the source failed: that is the story
                raise upload.failure from None
            raise self._error(err, call.request_id) from err
        return call.convert(response)

    @overload
    def download_checkpoint(
        self,
        checkpoint_id: str,
        dest: None = None,
        *,
        progress: Progress | None = None,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> bytes: ...
    @overload
    def download_checkpoint(
        self,
        checkpoint_id: str,
        dest: str | os.PathLike[str] | IO[bytes],
        *,
        progress: Progress | None = None,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> Checkpoint: ...
    def download_checkpoint(
        self,
        checkpoint_id: str,
        dest: Destination = None,
        *,
        progress: Progress | None = None,
        timeout: float | None = None,
        metadata: MetadataLike = (),
    ) -> bytes | Checkpoint:
        """A checkpoint's payload, verified: as bytes, or written to ``dest`` (a path,
        replaced atomically only once the whole payload verified, or a binary file)
        and then its manifest is returned. A corrupt payload raises ``DataLoss`` and
        leaves ``dest`` untouched."""
        sink = open_download(checkpoint_id, dest, progress)
        try:
            items: Iterator[Checkpoint | bytes] = self._stream(
                DOWNLOAD, download_call(checkpoint_id, timeout, metadata)
            )
            for item in items:
                sink.feed(item)
            return sink.finish()
        except BaseException:
            sink.abort()
            raise
