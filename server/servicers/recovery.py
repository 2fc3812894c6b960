"""RecoveryService over gRPC: checkpoints, recovery plans, retries, compensation, retention."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing
from typing import Any, TypeAlias, TypeVar

import grpc

from stateward.server.config import ConfigError, Settings
from stateward.server.deps import Deps
from stateward.server.domain import paging
from stateward.server.domain.errors import InvalidArgument
from stateward.server.domain.planner import Strategy
from stateward.server.rpc import convert, decoding, status
from stateward.server.rpc.context import namespace, replay, respond, unary
from stateward.server.servicers.execution import task_run, workflow_run
from stateward.server.services.checkpoints import (
    CheckpointService,
    RestoreResult,
    answer_full,
    check_create,
)
from stateward.server.services.recovery import (
    RecoveryPlan,
    RecoveryService,
    RetryResult,
    policy_from,
)
from stateward.server.services.retention import RetentionService
from stateward.storage.blobs import BlobStore
from stateward.storage.checkpoints import CheckpointRecord
from stateward.storage.runs import TaskRunRecord
from stateward.v1 import recovery_pb2 as pb
from stateward.v1 import recovery_pb2_grpc
from stateward.v1.common_pb2 import ItemStatus

log = logging.getLogger(__name__)

Ctx: TypeAlias = grpc.aio.ServicerContext
STRATEGY = {s: pb.RecoveryStrategy.Value(f"RECOVERY_STRATEGY_{s.value}") for s in Strategy}
CANCEL_SETTLE = 0.05  # seconds an upload waits after its last chunk for a late cancellation


def checkpoint(r: CheckpointRecord, *, with_payload: bool = False) -> pb.Checkpoint:
    """The manifest; ``with_payload`` adds an inline payload the record carries."""
    return pb.Checkpoint(
        checkpoint_id=r.checkpoint_id,
        agent_id=r.agent_id,
        state_version=r.state_version,
        size_bytes=r.size,
        sha256=r.sha256,
        compression=r.compression,
        labels=r.labels,
        create_time=convert.timestamp(r.created_at),
        payload=r.payload if with_payload else None,
    )


def _tag(message: Any, field: str) -> bytes:
    """A length-delimited field's tag byte (wire type 2), for fields numbered below 16."""
    number = message.DESCRIPTOR.fields_by_name[field].number
    return bytes([number << 3 | 2])


_CHUNK_TAG = _tag(pb.DownloadCheckpointResponse, "chunk")
_UPLOAD_CHUNK_TAG = _tag(pb.UploadCheckpointRequest, "chunk")


def chunk_message(chunk: bytes) -> bytes:
    """``DownloadCheckpointResponse(chunk=chunk).SerializeToString()``, by hand: the field's
    tag, the length as a varint, the bytes. (upb's encoder costs ~1 ms per MiB here, mostly
    page faults in fresh allocations; this join about a twentieth of that, and it releases
    the GIL for its copy, all parts being bytes.)"""
    head = bytearray(_CHUNK_TAG)
    size = len(chunk)
    while size > 0x7F:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    head.append(size)
    return b"".join((bytes(head), chunk))


def upload_chunk(raw: bytes) -> bytes | memoryview | None:
    """The chunk an encoded ``UploadCheckpointRequest`` carries, or None if it carries the
    metadata (or nothing). The usual encoding, the chunk field alone, is read by hand and
    the chunk returned as a view of ``raw``: parsing with protobuf and reading ``.chunk``
    would copy each MiB twice on the event loop. Any other encoding goes through protobuf
    (which raises ``DecodeError`` on malformed bytes)."""
    if raw[:1] == _UPLOAD_CHUNK_TAG:
        size, shift, at = 0, 0, 1
        while at < min(len(raw), 6):  # a chunk's length fits a 5-byte varint
            byte = raw[at]
            at += 1
            size |= (byte & 0x7F) << shift
            if byte < 0x80:
                if at + size == len(raw):
                    return memoryview(raw)[at:]
                break
            shift += 7
    message = pb.UploadCheckpointRequest.FromString(raw)
    return message.chunk if message.WhichOneof("item") == "chunk" else None


# Download reads get their own threads: a pull is short (a few chunks read and hashed),
# so a few threads serve many streams, and slow readers never starve the default executor.
_READERS = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="stateward-download")
READ_AHEAD = 2
"""Chunks (~1 MiB) a download keeps read and hashed ahead of sending. Measured: 2 beats
1 (the reader never waits for the loop to ask) and 4 (more fresh buffers in flight)."""
_END = object()


class _Pump:
    """Pulls a blocking iterator in a worker thread into ``ready``, at most ``depth`` ahead.

    One worker call pulls until ``depth`` items wait, so a consumer that stops reading holds
    no thread, or until it pulled ``4 * depth`` (other downloads share the threads); a
    steady stream costs a thread hop per many items, not per item. The lock guards
    ``ready``, ``busy``, ``ended`` and ``waiter`` between the loop and the worker.
    """

    def __init__(self, items: Iterator[Any], depth: int) -> None:
        self.items = items
        self.depth = depth
        self.loop = asyncio.get_running_loop()
        self.lock = threading.Lock()
        self.ready: collections.deque[tuple[bool, Any]] = collections.deque()
        self.busy = False  # a worker call is pulling (or about to)
        self.ended = False  # the iterator is exhausted or failed, or the consumer left
        self.waiter: asyncio.Future[None] | None = None
        self.running: asyncio.Future[None] | None = None

    def _pull(self) -> None:
        """Worker thread: pull until ``depth`` items wait, or the end, or a turn's worth."""
        for _ in range(4 * self.depth):
            with self.lock:
                if self.ended or len(self.ready) >= self.depth:
                    break
            try:
                entry = (True, next(self.items, _END))
            except BaseException as error:  # handed to the consumer, in order
                entry = (False, error)
            with self.lock:
                self.ready.append(entry)
                if entry[1] is _END or not entry[0]:
                    self.ended = True
                waiter, self.waiter = self.waiter, None
            if waiter is not None:
                self.loop.call_soon_threadsafe(_wake, waiter)
        with self.lock:
            self.busy = False
            waiter, self.waiter = self.waiter, None
        if waiter is not None:  # the consumer may be waiting for a restart
            self.loop.call_soon_threadsafe(_wake, waiter)

    async def take(self) -> tuple[bool, Any]:
        while True:
            with self.lock:
                entry = self.ready.popleft() if self.ready else None
                start = not self.busy and not self.ended and len(self.ready) <= self.depth // 2
                if start:
                    self.busy = True
                elif entry is None:
                    self.waiter = self.loop.create_future()
                waiter = self.waiter
            if start:
                self.running = self.loop.run_in_executor(_READERS, self._pull)
            if entry is not None:
                return entry
            if waiter is not None:
                await waiter

    async def close(self) -> None:
        """Stop pulling; once no pull is running, close the iterator."""
        with self.lock:
            self.ended = True
        running = self.running
        if running is not None:
            if not running.done():
                await asyncio.wait([running])
            if not running.cancelled():
                running.exception()  # retrieved: a failure after the consumer left is moot
        close = getattr(self.items, "close", None)
        if close is not None:
            close()
        self.ready.clear()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def read_ahead(items: Iterator[Any], depth: int = READ_AHEAD) -> AsyncGenerator[Any, None]:
    """A blocking iterator (disk reads, hashing) pulled up to ``depth`` items
    ahead in a worker thread, so reading the next chunks overlaps sending this one. An
    error of the iterator is raised after the items before it. The iterator is closed
    at the end, once no pull of it is running."""
    pump = _Pump(items, depth)
    try:
        while True:
            ok, item = await pump.take()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        await pump.close()


def compensation_step(r: TaskRunRecord) -> pb.CompensationStep:
    return pb.CompensationStep(
        task_run_id=r.task_run_id,
        task_id=r.task_id,
        compensation_json=r.compensation,
        complete_time=convert.timestamp(r.ended_at),
        done=r.compensation_done_at is not None,
        done_time=convert.timestamp(r.compensation_done_at),
    )


def recovery_plan(p: RecoveryPlan) -> pb.RecoveryPlan:
    return pb.RecoveryPlan(
        agent_id=p.agent_id,
        agent_status=convert.AGENT_STATUS[p.agent_status],  # type: ignore[arg-type]
        last_good_state_version=p.last_good_state_version,
        last_failure=task_run(p.last_failure) if p.last_failure else None,
        failed_task_runs=[task_run(r) for r in p.failed_task_runs],
        checkpoint=checkpoint(p.checkpoint) if p.checkpoint else None,
        strategy=STRATEGY[p.plan.strategy],  # type: ignore[arg-type]
        suggested_timeout=convert.duration(p.plan.suggested_timeout_us),
        retry_delay=convert.duration(p.plan.retry_delay_us),
        explanation=p.plan.explanation,
        failed_task_runs_truncated=p.failed_task_runs_truncated,
    )


def _duration(message: Any, field: str) -> int | None:
    return (
        convert.duration_micros(getattr(message, field), field) if message.HasField(field) else None
    )


class RecoveryServicer(recovery_pb2_grpc.RecoveryServiceServicer):
    def __init__(
        self,
        checkpoints: CheckpointService,
        recovery: RecoveryService,
        retention: RetentionService,
        *,
        max_message_bytes: int = 8 << 20,
    ) -> None:
        self.checkpoints = checkpoints
        self.recovery = recovery
        self.retention = retention
        # A batch of listings answers within half the message limit (or with its first
        # listing alone, when that is bigger), so batching never makes an answer too big.
        self.batch_answer_bytes = min(BATCH_ANSWER_BYTES, max_message_bytes // 2)
        self.answer_bytes = paging.page_budget(max_message_bytes)

    # -- checkpoints ----------------------------------------------------------------------
    @unary
    async def CreateCheckpoint(
        self, request: pb.CreateCheckpointRequest, context: Ctx
    ) -> pb.CreateCheckpointResponse:
        return await self._create(namespace(context), request)

    async def _create(
        self,
        ns: str,
        request: pb.CreateCheckpointRequest,
        labels: dict[str, str] | None = None,
    ) -> pb.CreateCheckpointResponse:
        """One create; ``labels``: the request's, already checked (check_create)."""
        built: list[tuple[CheckpointRecord, pb.CreateCheckpointResponse]] = []

        def build(record: CheckpointRecord) -> pb.CreateCheckpointResponse:
            # Asked twice, for the stored answer and for the reply: built once per record
            # (a write replayed after another write's refusal makes a new record).
            if not built or built[0][0] is not record:
                built[:] = [(record, pb.CreateCheckpointResponse(checkpoint=checkpoint(record)))]
            return built[0][1]

        result = await self.checkpoints.create(
            ns,
            request.agent_id,
            request.payload,
            dict(request.labels) if labels is None else labels,
            replay(request, "CreateCheckpoint", build),
            checked=labels is not None,
        )
        return respond(result, pb.CreateCheckpointResponse, build)

    @unary
    async def BatchCreateCheckpoints(
        self, request: pb.BatchCreateCheckpointsRequest, context: Ctx
    ) -> pb.BatchCreateCheckpointsResponse:
        # Each create is its own write: they share the writer's next group commit. The
        # answer is weighed first, as each result echoes its labels: the requests past
        # what one response holds are not written but answer BATCH_ANSWER_FULL, to be sent
        # again (the first always goes, as its own call would).
        ns = namespace(context)
        requests = request.requests
        _check_batch(requests)
        outcomes: list[pb.CreateCheckpointResponse | ItemStatus | None] = []
        checked: list[dict[str, str]] = []
        room, full = self.answer_bytes, False
        for r in requests:
            outcome: ItemStatus | None = None
            labels = dict(r.labels)
            checked.append(labels)
            try:
                check_create(r.agent_id, labels, r.request_id)
                cost = _created_bytes(r)
            except InvalidArgument as error:  # its own call would end here too
                outcome = status.item_status(error)
                cost = ITEM_FRAMING + outcome.ByteSize()
            if outcomes and (full or cost > room):
                full = True  # later requests too: the answered ones stay a prefix
                outcome = status.item_status(answer_full(self.answer_bytes))
            else:
                room -= cost
            outcomes.append(outcome)
        todo = [
            (r, labels)
            for r, labels, outcome in zip(requests, checked, outcomes, strict=True)
            if outcome is None
        ]
        created = iter(await _each(todo, lambda item: self._create(ns, *item)))
        result = pb.CreateCheckpointResult
        return pb.BatchCreateCheckpointsResponse(
            results=[
                result(error=o) if isinstance(o, ItemStatus) else result(response=o)
                for o in (next(created) if o is None else o for o in outcomes)
            ]
        )

    @unary
    async def UploadCheckpoint(
        self, request_iterator: AsyncIterator[bytes], context: Ctx
    ) -> pb.UploadCheckpointResponse:
        """Takes encoded ``UploadCheckpointRequest`` messages: ``register`` gives this method
        no request deserializer, so chunks are taken from the raw bytes (``upload_chunk``)."""

        def build(record: CheckpointRecord) -> pb.UploadCheckpointResponse:
            return pb.UploadCheckpointResponse(checkpoint=checkpoint(record))

        requests = aiter(request_iterator)
        raw = await anext(requests, None)
        try:
            first = None if raw is None else pb.UploadCheckpointRequest.FromString(raw)
        except decoding.DECODE_ERRORS as error:
            await decoding.refuse(context, "UploadCheckpoint", error)
        if first is None or first.WhichOneof("item") != "metadata":
            raise InvalidArgument.one(
                "metadata", "the first message of an upload must carry the metadata"
            )
        meta = first.metadata

        async def chunks() -> AsyncIterator[bytes | memoryview]:
            async for raw in requests:
                try:
                    chunk = upload_chunk(raw)
                except decoding.DECODE_ERRORS as error:
                    await decoding.refuse(context, "UploadCheckpoint", error)
                if chunk is None:
                    raise InvalidArgument.one(
                        "chunk", "only the first message carries metadata; the rest carry chunks"
                    )
                yield chunk

        # grpc.aio ends the request stream the same way when the client cancels as when it
        # finishes; the cancellation reaches this task a moment later. The service waits
        # that moment before committing, so a truncated upload is cancelled, not stored.
        # (A client that sends the payload's sha256 is protected regardless.)
        result = await self.checkpoints.upload(
            namespace(context),
            meta.agent_id,
            dict(meta.labels),
            meta.sha256,
            chunks(),
            replay(meta, "UploadCheckpoint", build),
            settle=CANCEL_SETTLE,
        )
        return respond(result, pb.UploadCheckpointResponse, build)

    @unary
    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: Ctx
    ) -> pb.GetCheckpointResponse:
        record = await self.checkpoints.get(namespace(context), request.checkpoint_id)
        return pb.GetCheckpointResponse(checkpoint=checkpoint(record))

    @unary
    async def ListCheckpoints(
        self, request: pb.ListCheckpointsRequest, context: Ctx
    ) -> pb.ListCheckpointsResponse:
        return await self._list(namespace(context), request)

    async def _list(
        self, ns: str, request: pb.ListCheckpointsRequest
    ) -> pb.ListCheckpointsResponse:
        records, token = await self.checkpoints.list(
            ns,
            request.agent_id,
            page_size=request.page_size,
            page_token=request.page_token,
            labels=dict(request.labels),
            with_payloads=request.include_payloads,
        )
        return _listed(records, token, request.include_payloads)

    @unary
    async def BatchListCheckpoints(
        self, request: pb.BatchListCheckpointsRequest, context: Ctx
    ) -> pb.BatchListCheckpointsResponse:
        # One read job for them all: each listing is a few indexed lookups.
        requests = request.requests
        _check_batch(requests)
        pages = await self.checkpoints.list_many(
            namespace(context),
            [
                (r.agent_id, r.page_size, r.page_token, dict(r.labels), r.include_payloads)
                for r in requests
            ],
            budget=self.batch_answer_bytes,
        )
        result = pb.ListCheckpointsResult
        return pb.BatchListCheckpointsResponse(
            results=[
                result(error=status.item_status(page))
                if isinstance(page, Exception)
                else result(response=_listed(*page, r.include_payloads))
                for r, page in zip(requests, pages, strict=True)
            ]
        )

    async def DownloadCheckpoint(
        self, request: pb.DownloadCheckpointRequest, context: Ctx
    ) -> AsyncIterator[bytes]:
        """The manifest, then ~1 MiB chunks. Integrity is known only after the last chunk,
        so a corrupt blob ends the stream with DATA_LOSS after its bytes: clients accept the
        payload only when the stream ends with OK.

        Yields encoded ``DownloadCheckpointResponse`` messages: ``register`` gives this
        method no response serializer, so each chunk is encoded by hand (``chunk_message``).
        That join stays on the event loop, which has time to spare: the reader thread
        (read and hash) is the longer stage.
        """
        try:
            record, chunks = await self.checkpoints.download(
                namespace(context), request.checkpoint_id
            )
            yield pb.DownloadCheckpointResponse(checkpoint=checkpoint(record)).SerializeToString()
            async with aclosing(read_ahead(chunks)) as stream:
                async for chunk in stream:
                    yield chunk_message(chunk)
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception as error:
            await status.abort(context, error)

    @unary
    async def DeleteCheckpoint(
        self, request: pb.DeleteCheckpointRequest, context: Ctx
    ) -> pb.DeleteCheckpointResponse:
        def build(record: CheckpointRecord) -> pb.DeleteCheckpointResponse:
            return pb.DeleteCheckpointResponse(checkpoint_id=record.checkpoint_id)

        result = await self.checkpoints.delete(
            namespace(context),
            request.checkpoint_id,
            replay(request, "DeleteCheckpoint", build),
        )
        return respond(result, pb.DeleteCheckpointResponse, build)

    @unary
    async def RestoreCheckpoint(
        self, request: pb.RestoreCheckpointRequest, context: Ctx
    ) -> pb.RestoreCheckpointResponse:
        def build(result: RestoreResult) -> pb.RestoreCheckpointResponse:
            return pb.RestoreCheckpointResponse(
                state_version=result.state_version, agent=convert.agent(result.agent)
            )

        result = await self.checkpoints.restore(
            namespace(context),
            request.checkpoint_id,
            expected_version=(
                request.expected_version if request.HasField("expected_version") else None
            ),
            reinitialize=request.reinitialize,
            replay=replay(request, "RestoreCheckpoint", build),
        )
        return respond(result, pb.RestoreCheckpointResponse, build)

    # -- recovery -------------------------------------------------------------------------
    @unary
    async def RecoverAgent(
        self, request: pb.RecoverAgentRequest, context: Ctx
    ) -> pb.RecoverAgentResponse:
        plan = await self.recovery.plan(namespace(context), request.agent_id)
        return pb.RecoverAgentResponse(plan=recovery_plan(plan))

    @unary
    async def RetryWorkflowRun(
        self, request: pb.RetryWorkflowRunRequest, context: Ctx
    ) -> pb.RetryWorkflowRunResponse:
        def build(result: RetryResult) -> pb.RetryWorkflowRunResponse:
            return pb.RetryWorkflowRunResponse(
                run=workflow_run(result.run),
                carried_over=[task_run(r) for r in result.carried_over],
                pending_task_ids=result.pending_task_ids,
                carried_over_truncated=result.carried_over_truncated,
                pending_task_ids_truncated=result.pending_task_ids_truncated,
            )

        result = await self.recovery.retry_run(
            namespace(context), request.run_id, replay(request, "RetryWorkflowRun", build)
        )
        return respond(result, pb.RetryWorkflowRunResponse, build)

    @unary
    async def GetCompensationPlan(
        self, request: pb.GetCompensationPlanRequest, context: Ctx
    ) -> pb.GetCompensationPlanResponse:
        steps, token = await self.recovery.compensation_plan(
            namespace(context),
            request.run_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.GetCompensationPlanResponse(
            steps=[compensation_step(r) for r in steps], next_page_token=token
        )

    @unary
    async def CompleteCompensation(
        self, request: pb.CompleteCompensationRequest, context: Ctx
    ) -> pb.CompleteCompensationResponse:
        def build(record: TaskRunRecord) -> pb.CompleteCompensationResponse:
            return pb.CompleteCompensationResponse(step=compensation_step(record))

        result = await self.recovery.complete_compensation(
            namespace(context),
            request.run_id,
            request.task_run_id,
            replay(request, "CompleteCompensation", build),
        )
        return respond(result, pb.CompleteCompensationResponse, build)

    # -- retention (admin) ------------------------------------------------------------------
    @unary
    async def PruneCheckpoints(
        self, request: pb.PruneCheckpointsRequest, context: Ctx
    ) -> pb.PruneCheckpointsResponse:
        if request.keep_last < 0:
            raise InvalidArgument.one("keep_last", "must be 0 (the configured policy) or more")
        result = await self.retention.prune(
            namespace(context),
            agent_id=request.agent_id,
            keep_last=request.keep_last or None,
            max_age_us=_duration(request, "max_age"),
            dry_run=request.dry_run,
        )
        return pb.PruneCheckpointsResponse(
            deleted=[checkpoint(r) for r in result.deleted.items],
            freed_bytes=result.freed_bytes,
            deleted_count=result.deleted.count,
            deleted_truncated=result.deleted.truncated,
        )

    @unary
    async def ArchiveRuns(
        self, request: pb.ArchiveRunsRequest, context: Ctx
    ) -> pb.ArchiveRunsResponse:
        ended_before = (
            convert.micros(request.ended_before, "ended_before")
            if request.HasField("ended_before")
            else None
        )
        result = await self.retention.archive_runs(
            namespace(context),
            ended_before=ended_before,
            url=request.archive_url,
            dry_run=request.dry_run,
        )
        return pb.ArchiveRunsResponse(
            archive_url=result.url,
            runs=result.runs,
            task_runs=result.task_runs,
            events=result.events,
        )

    @unary
    async def CollectGarbage(
        self, request: pb.CollectGarbageRequest, context: Ctx
    ) -> pb.CollectGarbageResponse:
        # The blob store is shared by every namespace: so is its garbage (the auth policy
        # asks for an admin of every namespace).
        result = await self.retention.collect_garbage(
            None,
            grace_us=_duration(request, "grace_period"),
            dry_run=request.dry_run,
        )
        return pb.CollectGarbageResponse(
            deleted_blobs=[blob.key for blob in result.deleted.items],
            freed_bytes=result.freed_bytes,
            deleted_count=result.deleted.count,
            deleted_truncated=result.deleted.truncated,
        )


MAX_BATCH = 100
"""Requests per Batch* call."""
BATCH_ANSWER_BYTES = 4 << 20
"""About the most bytes of listings a BatchListCheckpoints answers with; the requests
beyond answer BATCH_ANSWER_FULL (RESOURCE_EXHAUSTED) and are sent again by the client."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _listed(
    records: list[CheckpointRecord], token: str, with_payload: bool
) -> pb.ListCheckpointsResponse:
    return pb.ListCheckpointsResponse(
        checkpoints=[checkpoint(r, with_payload=with_payload) for r in records],
        next_page_token=token,
    )


ITEM_FRAMING = 16
"""A batch result's framing around its response or status."""
CREATE_ERROR_BYTES = 2048
"""At most what the error of a create that passed its checks costs in an answer (agent
not found, request id reused, storage unavailable, internal): a message and small details."""


def _created_bytes(r: pb.CreateCheckpointRequest) -> int:
    """At most what a create that passed its checks costs in a batch answer: its manifest
    (which echoes the labels, with ids, digest and times), or a small error."""
    manifest = (
        paging.RECORD_BYTES
        + paging.text_bytes(r.agent_id)
        + paging.labels_bytes(dict(r.labels))
        + 3 * (paging.FIELD_BYTES + 128)  # checkpoint id, sha256, compression
    )
    return ITEM_FRAMING + max(manifest, CREATE_ERROR_BYTES)


def _check_batch(requests: Sequence[Any]) -> None:
    if not 1 <= len(requests) <= MAX_BATCH:
        raise InvalidArgument.one(
            "requests", f"a batch holds 1 to {MAX_BATCH} requests (got {len(requests)})"
        )


async def _each(
    requests: Sequence[Req], serve: Callable[[Req], Awaitable[Resp]]
) -> list[Resp | ItemStatus]:
    """Serve ``requests`` concurrently, each on its own: a failure becomes that request's
    status, as its own call would have ended, and leaves the others alone."""
    outcomes = await asyncio.gather(*map(serve, requests), return_exceptions=True)
    served: list[Resp | ItemStatus] = []
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            served.append(status.item_status(outcome))
        elif isinstance(outcome, BaseException):  # a cancellation: the whole call ends
            raise outcome
        else:
            served.append(outcome)
    return served


def storage_options(settings: Settings) -> dict[str, Any]:
    """The ``blob_options`` setting as fsspec storage options."""
    if not settings.blob_options:
        return {}
    try:
        options = json.loads(settings.blob_options)
    except ValueError as error:
        raise ConfigError(f"blob_options: not valid JSON ({error})") from None
    if not isinstance(options, dict):
        raise ConfigError("blob_options: must be a JSON object of fsspec storage options")
    return options


def blob_store(settings: Settings) -> BlobStore:
    try:
        return BlobStore(
            settings.resolved_blob_url,
            compression=settings.blob_compression,
            storage_options=storage_options(settings),
        )
    except ValueError as error:
        raise ConfigError(f"blob_url: {error}") from None


PROBE_TIMEOUT = 2.0
"""Seconds start-up waits for the blob store's first answer before serving without it."""


async def probe_blob_store(blobs: BlobStore) -> None:
    """Refuse to start when the blob backend does not take ``blob_options``, rather than
    answer INTERNAL on the first checkpoint call. A store that does not answer is no
    reason to refuse: only checkpoint calls need it, and they answer UNAVAILABLE."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[BaseException | None] = loop.create_future()

    def probe() -> None:
        outcome: BaseException | None = None
        try:
            blobs.probe()
        except BaseException as error:
            outcome = error
        try:
            loop.call_soon_threadsafe(_settle, answered, outcome)
        except RuntimeError:  # the loop closed meanwhile
            pass

    # Its own daemon thread, not the loop's executor, which shutdown joins: a store that
    # never answers must not hold up stopping the server.
    threading.Thread(target=probe, name="stateward-blob-probe", daemon=True).start()
    try:
        error = await asyncio.wait_for(answered, PROBE_TIMEOUT)
    except TimeoutError:
        log.warning("the blob store %s did not answer within %g s", blobs.url, PROBE_TIMEOUT)
        return
    if isinstance(error, TypeError):
        raise ConfigError(
            f"blob_options: the {blobs.protocol}:// backend does not take them ({error})"
        )
    if error is not None:  # unreachable, denied: log it and serve
        log.warning("the blob store %s did not answer at start-up: %r", blobs.url, error)


def _settle(future: asyncio.Future[BaseException | None], outcome: BaseException | None) -> None:
    if not future.done():
        future.set_result(outcome)


def register(server: grpc.aio.Server, deps: Deps) -> None:
    settings = deps.settings
    blobs = blob_store(settings)
    deps.extras["blob_store"] = blobs
    deps.startup.append(lambda: probe_blob_store(blobs))
    answer_bytes = paging.page_budget(settings.max_message_bytes)
    checkpoints = CheckpointService(
        deps.db,
        blobs,
        state_history=settings.state_history,
        page_bytes=answer_bytes,
    )
    recovery = RecoveryService(
        deps.db, checkpoints, policy_from(settings), answer_bytes=answer_bytes
    )
    retention = RetentionService(
        deps.db, blobs, settings, storage_options(settings), answer_bytes=answer_bytes
    )
    deps.extras["retention_service"] = retention
    if settings.retention_interval > 0:
        deps.background.append(retention.run_forever)
    servicer = RecoveryServicer(
        checkpoints, recovery, retention, max_message_bytes=settings.max_message_bytes
    )
    recovery_pb2_grpc.add_RecoveryServiceServicer_to_server(servicer, server)
    # Replaces the generated handlers: DownloadCheckpoint yields messages it encoded itself,
    # UploadCheckpoint takes its chunks from the raw request bytes.
    server.add_registered_method_handlers(
        "stateward.v1.RecoveryService",
        {
            "DownloadCheckpoint": grpc.unary_stream_rpc_method_handler(
                servicer.DownloadCheckpoint,
                request_deserializer=pb.DownloadCheckpointRequest.FromString,
            ),
            "UploadCheckpoint": grpc.stream_unary_rpc_method_handler(
                servicer.UploadCheckpoint,
                response_serializer=pb.UploadCheckpointResponse.SerializeToString,
            ),
        },
    )
