"""Checkpoint use cases: create, upload, read, list, download, delete, restore.

A payload of at most ``INLINE_MAX`` bytes given to ``create`` is stored inline, in the
manifest row: the checkpoint is then one group-committed database write (no blob, no file
fsync), and its reads come from the row, verified against the sha256 like a blob's.
Everything below is about blob payloads (uploads, and larger ``create`` payloads).

Order of writes (what a crash at any point leaves behind):

1. the payload streams to a temporary blob; its sha256 is computed on the way;
2. the blob is moved under its final key ``<namespace>/<agent_id>/<checkpoint_id>``;
3. one database write inserts the manifest and emits ``checkpoint.created``.

A crash before 3 leaves a blob without a manifest, which garbage collection removes
after the grace period; a failed manifest write deletes its blob at once (best effort).
A manifest therefore always names a complete blob. Deleting goes the other way round:
manifest first, then the blob.

Idempotency: a request_id is looked up *before* anything is uploaded, so a retried
upload is answered from the stored response without sending the payload again; the
manifest write is also guarded, so two racing retries store one checkpoint (the loser's
blob is deleted).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import Connection

from stateward.server import metrics
from stateward.server.domain import paging
from stateward.server.domain import validation as check
from stateward.server.domain.errors import (
    BatchAnswerFull,
    Conflict,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Violations,
)
from stateward.server.domain.lifecycle import STAMPS, Status
from stateward.server.domain.runs import new_id
from stateward.server.services import weights
from stateward.server.services.idempotency import Replay, Stored, guarded
from stateward.storage import Database, WriteContext, now_us
from stateward.storage import agents as agent_rows
from stateward.storage import checkpoints as rows
from stateward.storage import idempotency as stored_answers
from stateward.storage import states as state_rows
from stateward.storage.blobs import (
    BlobCorrupt,
    BlobInfo,
    BlobStore,
    BlobWriter,
    UnsafeBlobKey,
    blob_key,
)
from stateward.storage.checkpoints import CheckpointRecord
from stateward.storage.errors import StorageUnavailable
from stateward.storage.records import AgentRecord, TransitionRecord
from stateward.storage.states import StateRecord

log = logging.getLogger(__name__)

MAX_CHUNK = 4 << 20
WRITE_AHEAD = 4 << 20
"""Upload bytes received ahead of the blob writer before receiving pauses."""
INLINE_MAX = 64 << 10
"""``create`` payloads up to this size are stored in the manifest row instead of a blob."""
PAYLOAD_PAGE = 16
"""Most checkpoints in a listing page that returns inline payloads (at most 1 MiB of them)."""
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


@dataclass(slots=True)
class RestoreResult:
    state_version: int
    agent: AgentRecord


def _data(**fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def _checkpoint_missing(checkpoint_id: str) -> NotFound:
    return NotFound(f"checkpoint {checkpoint_id!r} does not exist")


def _agent_missing(agent_id: str) -> NotFound:
    return NotFound(f"agent {agent_id!r} does not exist")


def new_checkpoint_id(now: int) -> str:
    """``ckpt_`` + a ULID: sorts by creation time (to the millisecond) as a string."""
    return new_id("ckpt_", now)


class CheckpointService:
    def __init__(
        self, db: Database, blobs: BlobStore, *, state_history: int, page_bytes: int = 8 << 20
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.state_history = max(1, state_history)
        self.page_bytes = page_bytes  # the manifest bytes one list response may carry

    # -- create and upload ------------------------------------------------------------
    async def create(
        self,
        namespace: str,
        agent_id: str,
        payload: bytes,
        labels: dict[str, str],
        replay: Replay | None = None,
        *,
        checked: bool = False,
    ) -> CheckpointRecord | Stored:
        """``checked``: the caller ran check_create already (a batch weighs each request)."""
        if not checked:
            check_create(agent_id, labels, replay.request_id if replay else "")
        if len(payload) <= INLINE_MAX:
            # No upload to spare: the write itself checks the request_id and the agent.
            size = len(payload)
            info = BlobInfo("", size, size, hashlib.sha256(payload).hexdigest(), "none")
            return await self._commit_manifest(
                namespace, agent_id, new_checkpoint_id(now_us()), info, labels, replay, payload
            )
        previous = await self._replayed(namespace, replay)
        if previous is not None:
            return previous
        await self._require_agent(namespace, agent_id)
        checkpoint_id = new_checkpoint_id(now_us())
        key = blob_key(namespace, agent_id, checkpoint_id)
        with self.blobs.protect(key):
            info = await asyncio.to_thread(self.blobs.put, key, payload)
            return await self._commit_manifest(
                namespace, agent_id, checkpoint_id, info, labels, replay
            )

    async def upload(
        self,
        namespace: str,
        agent_id: str,
        labels: dict[str, str],
        sha256: str,
        chunks: AsyncIterator[bytes | memoryview],
        replay: Replay | None = None,
        *,
        settle: float = 0.0,
    ) -> CheckpointRecord | Stored:
        """Stream ``chunks`` to a new checkpoint; memory holds a few chunks at a time.

        ``settle``: seconds to wait after the last chunk before committing, for a transport
        that reports a cancellation only after ending the stream (the wait overlaps the
        final fsync). Skipped when the metadata announced the sha256: a truncated payload
        cannot match it.
        """
        v = Violations()
        check.check_id(v, "metadata.agent_id", agent_id)
        check.check_labels(v, "metadata.labels", labels)
        check.check_request_id(v, replay.request_id if replay else "")
        if sha256 and not SHA256_PATTERN.fullmatch(sha256.lower()):
            v.add("metadata.sha256", "must be 64 hexadecimal digits (a sha256 of the payload)")
        v.raise_if_any()
        expected = sha256.lower()
        # With the payload's sha256 announced, the metadata names the whole request, and a
        # retry is answered before any byte is read. Without it, the payload is known only
        # once received: its hash then joins the fingerprint, so a retry with other bytes
        # is refused like any request_id reused for another request.
        late = replay is not None and bool(replay.request_id) and not expected
        previous = None if late else await self._replayed(namespace, replay)
        if previous is not None:
            return previous
        await self._require_agent(namespace, agent_id)
        checkpoint_id = new_checkpoint_id(now_us())
        key = blob_key(namespace, agent_id, checkpoint_id)
        with self.blobs.protect(key):
            info = await self._receive(key, expected, chunks, settle)
            if late and replay is not None:
                replay = replace(replay, fingerprint=_with_payload(replay.fingerprint, info))
            try:
                result = await self._commit_manifest(
                    namespace, agent_id, checkpoint_id, info, labels, replay
                )
            except InvalidArgument:
                await self._discard(key)
                raise
            if isinstance(result, Stored):  # a retry: the first upload's blob is the one kept
                await self._discard(key)
            return result

    async def _receive(
        self, key: str, expected: str, chunks: AsyncIterator[bytes | memoryview], settle: float
    ) -> BlobInfo:
        """Stream the chunks to a temporary blob, check the hash, commit it under ``key``.

        The event loop receives while a worker thread hashes and writes the chunks that came
        before (hashlib and file writes release the GIL), through ``_WriteBehind``: once
        ``WRITE_AHEAD`` bytes are unwritten, receiving pauses for the writer, so memory stays
        bounded whatever the payload's size.
        """
        writer: BlobWriter = await asyncio.to_thread(self.blobs.writer)
        pipe = _WriteBehind(writer, WRITE_AHEAD)
        busy: asyncio.Future[None] | None = None  # the worker call finishing the blob
        try:
            index = 0
            async for chunk in chunks:
                index += 1
                if len(chunk) > MAX_CHUNK:
                    raise InvalidArgument.one(
                        "chunk",
                        f"message {index} carries {len(chunk)} bytes; chunks must be at most "
                        f"{MAX_CHUNK} bytes (4 MiB)",
                    )
                if chunk:
                    await pipe.put(chunk)
            await pipe.flush()
            # The blob is made durable while a late cancellation has time to arrive.
            busy = asyncio.get_running_loop().run_in_executor(None, writer.close)
            await asyncio.gather(asyncio.shield(busy), asyncio.sleep(0.0 if expected else settle))
            busy = None
            if expected and writer.sha256 != expected:
                # Likely a cancelled client whose cancellation is still on its way (the
                # stream ended early): give it the settle time, so such a call ends
                # CANCELLED rather than as DATA_LOSS, a code operators alert on.
                await asyncio.sleep(settle)
                raise DataLoss(
                    f"the uploaded payload's sha256 is {writer.sha256}, not the {expected} the "
                    "metadata announced: bytes were lost or changed on the way; nothing was stored"
                )
            return await asyncio.to_thread(writer.commit, key)
        except BaseException:
            # Also on cancellation (the client went away): a best-effort cleanup, once no
            # thread writes the blob any more; garbage collection catches what this misses.
            if busy is None:
                busy = pipe.stop()
            if busy is None or busy.done():
                _abandon(writer, busy)
            else:
                busy.add_done_callback(lambda done: _abandon(writer, done))
            raise

    async def _replayed(self, namespace: str, replay: Replay | None) -> Stored | None:
        """The stored answer of an earlier call with this request_id, checked like guarded()."""
        if replay is None or not replay.request_id:
            return None
        previous = await self.db.read(
            lambda conn: stored_answers.get(conn, namespace, replay.request_id)
        )
        if previous is None:
            return None
        if previous.method != replay.method or previous.fingerprint != replay.fingerprint:
            raise InvalidArgument.one(
                "request_id",
                f"was already used for a different request ({previous.method}); "
                "use a new request_id for a new request",
            )
        return Stored(previous.response)

    async def _require_agent(self, namespace: str, agent_id: str) -> None:
        head = await self.db.read(lambda conn: state_rows.probe(conn, namespace, agent_id))
        if head is None:
            raise _agent_missing(agent_id)

    async def _commit_manifest(
        self,
        namespace: str,
        agent_id: str,
        checkpoint_id: str,
        info: BlobInfo,
        labels: dict[str, str],
        replay: Replay | None,
        payload: bytes | None = None,
    ) -> CheckpointRecord | Stored:
        """Insert the manifest of a committed blob (``info``), or of an inline ``payload``
        (then ``info.key`` is "")."""

        def write(ctx: WriteContext) -> CheckpointRecord:
            # The event first: its counter lock is taken before the agent row's, the order
            # every writer follows, so replicas cannot deadlock (see services/state.py).
            event = ctx.emit(namespace, "checkpoint.created", b"{}", agent_id=agent_id)
            record = CheckpointRecord(
                namespace=namespace,
                checkpoint_id=checkpoint_id,
                agent_id=agent_id,
                state_version=0,  # the agent's live version, set by insert_pinned
                size=info.size,
                stored_size=info.stored_size,
                sha256=info.sha256,
                compression=info.compression,
                blob_key=info.key,
                created_at=ctx.now,
                labels=dict(labels),
                payload=payload,
            )
            if not rows.insert_pinned(ctx.conn, record):
                raise _agent_missing(agent_id)
            record.payload = None  # stored; the caller gets the manifest
            event.data = _data(
                checkpoint_id=checkpoint_id,
                state_version=record.state_version,
                size=record.size,
                sha256=record.sha256,
            )
            return record

        try:
            result = await self.db.write(guarded(namespace, replay, write))
        except StorageUnavailable:
            # The connection may have died during COMMIT: the manifest may have committed,
            # so the blob must stay (as on a cancellation); GC decides later.
            raise
        except Exception:
            # The write failed for sure (a cancellation is not caught here: the write may
            # still commit, so the blob must stay; GC decides later).
            await self._discard(info.key)
            raise
        if isinstance(result, Stored):  # a concurrent retry stored its checkpoint first
            await self._discard(info.key)
        else:
            metrics.CHECKPOINT_BYTES_IN.inc(info.size)
        return result

    async def _discard(self, key: str) -> None:
        if not key:  # an inline payload: nothing outside the row
            return
        try:
            await asyncio.to_thread(self.blobs.delete, key)
        except Exception as error:
            log.warning("could not delete blob %s (GC will): %r", key, error)

    # -- read ----------------------------------------------------------------------------
    async def get(self, namespace: str, checkpoint_id: str) -> CheckpointRecord:
        v = Violations()
        check.check_id(v, "checkpoint_id", checkpoint_id)
        v.raise_if_any()
        record = await self.db.read(lambda conn: rows.get(conn, namespace, checkpoint_id))
        if record is None:
            raise _checkpoint_missing(checkpoint_id)
        return record

    async def list(
        self,
        namespace: str,
        agent_id: str,
        *,
        page_size: int,
        page_token: str,
        labels: dict[str, str] | None = None,
        with_payloads: bool = False,
    ) -> tuple[list[CheckpointRecord], str]:
        """A page, newest first; ``with_payloads`` also returns inline payloads, verified
        (then a page holds at most ``PAYLOAD_PAGE`` checkpoints)."""
        query = _Listing.parse(namespace, agent_id, page_size, page_token, labels, with_payloads)
        return query.page(await self.db.read(query.read), self.page_bytes)

    async def list_many(
        self, namespace: str, queries: Sequence[ListQuery], *, budget: int
    ) -> Sequence[Page | Exception]:
        """Several listings in one read job; each answers or fails on its own (a database
        failure fails them all). Their pages hold at most about ``budget`` bytes in all, the
        first listing whatever it holds: the listings that find no room are read no further
        and answer BatchAnswerFull."""
        parsed: list[_Listing | Exception] = []
        for agent_id, page_size, page_token, labels, with_payloads in queries:
            try:
                parsed.append(
                    _Listing.parse(
                        namespace, agent_id, page_size, page_token, labels, with_payloads
                    )
                )
            except InvalidArgument as error:
                parsed.append(error)
        listings = [q for q in parsed if isinstance(q, _Listing)]

        def read(conn: Connection) -> list[list[CheckpointRecord]]:
            found: list[list[CheckpointRecord]] = []
            used = 0
            for query in listings:
                records = query.read(conn)
                used += _answer_bytes(records)
                if found and used > budget:
                    break
                found.append(records)
            return found

        found = iter(await self.db.read(read))
        full = answer_full(budget)
        pages: list[Page | Exception] = []
        for query in parsed:
            if isinstance(query, Exception):
                pages.append(query)
                continue
            records = next(found, None)
            if records is None:
                pages.append(full)
                continue
            try:
                pages.append(query.page(records, self.page_bytes))
            except DataLoss as error:
                pages.append(error)
        return pages

    async def download(
        self, namespace: str, checkpoint_id: str
    ) -> tuple[CheckpointRecord, Iterator[bytes]]:
        """The manifest and a blocking iterator over the verified payload.

        Iterate it in a worker thread. It raises DataLoss when the blob is missing or does
        not match its manifest; the hash is only known after the last chunk, so a reader
        must treat the bytes as valid only if the iteration ends without an error.
        """
        v = Violations()
        check.check_id(v, "checkpoint_id", checkpoint_id)
        v.raise_if_any()
        record = await self.db.read(
            lambda conn: rows.get(conn, namespace, checkpoint_id, with_payload=True)
        )
        if record is None:
            raise _checkpoint_missing(checkpoint_id)
        if record.inline:  # verified here, before anything is sent
            return record, _sent(_check_inline(record, record.payload))
        return record, self._verified(record)

    def _verified(self, record: CheckpointRecord) -> Iterator[bytes]:
        try:
            self._check_key(record)
            sent = metrics.CHECKPOINT_BYTES_OUT
            for chunk in self.blobs.read(
                record.blob_key,
                sha256=record.sha256,
                size=record.size,
                compression=record.compression,
                stored_size=record.stored_size,
            ):
                sent.inc(len(chunk))
                yield chunk
        except BlobCorrupt as error:
            raise DataLoss(f"checkpoint {record.checkpoint_id!r}: {error}") from error

    def _check_key(self, record: CheckpointRecord) -> None:
        """The manifest's key must be the one its ids derive (never a foreign blob)."""
        try:
            derived = blob_key(record.namespace, record.agent_id, record.checkpoint_id)
        except UnsafeBlobKey as error:
            raise DataLoss(f"checkpoint {record.checkpoint_id!r}: {error}") from error
        if record.blob_key != derived:
            raise DataLoss(
                f"checkpoint {record.checkpoint_id!r}: its manifest names blob "
                f"{record.blob_key!r}, not {derived!r}"
            )

    async def verifies(self, record: CheckpointRecord) -> bool:
        """Whether the payload reads back complete and matching (an outage still raises)."""
        try:
            if record.inline:
                stored = await self.db.read(
                    lambda conn: rows.payload(conn, record.namespace, record.checkpoint_id)
                )
                _check_inline(record, stored)
                return True
            await asyncio.to_thread(lambda: sum(len(c) for c in self._verified(record)))
        except DataLoss as error:
            log.warning("checkpoint %s failed verification: %s", record.checkpoint_id, error)
            return False
        return True

    # -- delete ----------------------------------------------------------------------------
    async def delete(
        self, namespace: str, checkpoint_id: str, replay: Replay | None = None
    ) -> CheckpointRecord | Stored:
        """Delete the manifest, then the blob (a blob left behind is GC's)."""
        v = Violations()
        check.check_id(v, "checkpoint_id", checkpoint_id)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()

        def write(ctx: WriteContext) -> CheckpointRecord:
            event = ctx.emit(  # counter lock before row locks, as every write does
                namespace,
                "checkpoint.deleted",
                _data(checkpoint_id=checkpoint_id, reason="deleted"),
            )
            record = rows.get(ctx.conn, namespace, checkpoint_id)
            if record is None:
                raise _checkpoint_missing(checkpoint_id)
            rows.delete_checkpoints(ctx.conn, namespace, [checkpoint_id])
            event.agent_id = record.agent_id
            return record

        result = await self.db.write(guarded(namespace, replay, write))
        if not isinstance(result, Stored):
            await self._discard(result.blob_key)
        return result

    # -- restore -----------------------------------------------------------------------------
    async def restore(
        self,
        namespace: str,
        checkpoint_id: str,
        *,
        expected_version: int | None,
        reinitialize: bool,
        replay: Replay | None = None,
    ) -> RestoreResult | Stored:
        """Write the checkpoint's state version as a new version; optionally ERROR -> INITIALIZED.

        One write: the compare-and-set, the new version, the events and the transition
        commit together or not at all. ``reinitialize`` only acts on an agent in ERROR.
        """
        v = Violations()
        check.check_id(v, "checkpoint_id", checkpoint_id)
        if expected_version is not None and expected_version < 0:
            v.add("expected_version", f"must be 0 or a version number (got {expected_version})")
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()
        request_id = replay.request_id if replay else ""

        def write(ctx: WriteContext) -> RestoreResult:
            event = ctx.emit(namespace, "state.restored", b"{}")  # counter lock first
            record = rows.get(ctx.conn, namespace, checkpoint_id)
            if record is None:
                raise _checkpoint_missing(checkpoint_id)
            agent_id = record.agent_id
            event.agent_id = agent_id
            agent = agent_rows.get(ctx.conn, namespace, agent_id, for_update=True)
            if agent is None:
                raise _agent_missing(agent_id)
            _require_restorable(agent, record, expected_version)
            source = state_rows.get_version(ctx.conn, namespace, agent_id, record.state_version)
            if source is None:
                raise DataLoss(
                    f"checkpoint {checkpoint_id!r} pins state version {record.state_version}, "
                    "which is missing from the database"
                )
            version = agent.state_last_version + 1
            state_rows.insert_version(
                ctx.conn,
                StateRecord(
                    namespace,
                    agent_id,
                    version,
                    source.document,
                    source.schema_version,
                    source.size,
                    event.sequence,
                    ctx.now,
                ),
            )
            state_rows.set_versions(ctx.conn, namespace, agent_id, live=version, last=version)
            history = self.state_history
            state_rows.prune(
                ctx.conn, namespace, agent_id, version - history, sweep=version % history == 0
            )
            event.data = _data(
                version=version,
                size=source.size,
                checkpoint_id=checkpoint_id,
                from_version=record.state_version,
            )
            ctx.emit(
                namespace,
                "checkpoint.restored",
                _data(checkpoint_id=checkpoint_id, state_version=version),
                agent_id=agent_id,
            )
            agent.state_version = agent.state_last_version = version
            if reinitialize and agent.status == Status.ERROR.value:
                _reinitialize(ctx, agent, checkpoint_id, request_id)
            return RestoreResult(version, agent)

        return await self.db.write(guarded(namespace, replay, write))


def _sent(payload: bytes) -> Iterator[bytes]:
    metrics.CHECKPOINT_BYTES_OUT.inc(len(payload))
    yield payload


ListQuery = tuple[str, int, str, dict[str, str], bool]
"""A listing of ``list_many``: agent_id, page_size, page_token, labels, with_payloads."""
Page = tuple[list[CheckpointRecord], str]
"""Checkpoints, newest first, and the token of the next page ("" on the last)."""


@dataclass(frozen=True, slots=True)
class _Listing:
    """A validated ListCheckpoints: what to read, and how to page the rows read."""

    namespace: str
    agent_id: str
    labels: dict[str, str]
    size: int
    before: tuple[int, str] | None
    digest: str  # of the filter, for page tokens ("" until a token needs it)
    with_payloads: bool

    @classmethod
    def parse(
        cls,
        namespace: str,
        agent_id: str,
        page_size: int,
        page_token: str,
        labels: dict[str, str] | None,
        with_payloads: bool,
    ) -> _Listing:
        labels = labels or {}
        v = Violations()
        check.check_id(v, "agent_id", agent_id, required=False)
        check.check_labels(v, "labels", labels)
        size = check.check_page_size(v, page_size)
        v.raise_if_any()
        if with_payloads:
            size = min(size, PAYLOAD_PAGE)
        digest = ""  # only a token needs it
        before = None
        if page_token:
            digest = _filter_digest(namespace, agent_id, labels)
            cursor = paging.decode(page_token, digest, (int, str))
            before = (cursor[0], cursor[1]) if cursor else None
        return cls(namespace, agent_id, labels, size, before, digest, with_payloads)

    def read(self, conn: Connection) -> list[CheckpointRecord]:
        return rows.list_page(
            conn,
            self.namespace,
            agent_id=self.agent_id or None,
            before=self.before,
            limit=self.size,
            labels=self.labels,
            with_payloads=self.with_payloads,
        )

    def page(
        self, found: list[CheckpointRecord], budget: int
    ) -> tuple[list[CheckpointRecord], str]:
        """The page of the rows read (one more than a page tells that more follow), its
        inline payloads verified: at most ``size``, fewer when their bytes would not fit
        in ``budget``."""
        for record in found:
            if record.payload is not None:
                _check_inline(record, record.payload)
        keep = paging.fitting(found, self.size, weights.manifest, budget)
        if len(found) <= keep:
            return found, ""
        found = found[:keep]
        # Computed only when needed.
        digest = self.digest or _filter_digest(self.namespace, self.agent_id, self.labels)
        return found, paging.encode(digest, [found[-1].created_at, found[-1].checkpoint_id])


def check_create(agent_id: str, labels: dict[str, str], request_id: str) -> None:
    """CreateCheckpoint's checks of its request (INVALID_ARGUMENT), before any read."""
    v = Violations()
    check.check_id(v, "agent_id", agent_id)
    check.check_labels(v, "labels", labels)
    check.check_request_id(v, request_id)
    v.raise_if_any()


def answer_full(budget: int) -> BatchAnswerFull:
    return BatchAnswerFull(
        f"the batch's answer reached its {budget}-byte limit before this request; "
        "send it again, alone or in a smaller batch"
    )


def _answer_bytes(records: list[CheckpointRecord]) -> int:
    """About the bytes ``records`` take in a listing's answer."""
    return sum(map(weights.manifest, records))


def _with_payload(fingerprint: str, info: BlobInfo) -> str:
    """An upload's fingerprint once its payload is known (no sha256 was announced)."""
    return hashlib.sha256(f"{fingerprint}:{info.sha256}".encode()).hexdigest()


def _filter_digest(namespace: str, agent_id: str, labels: dict[str, str]) -> str:
    return paging.filter_digest(namespace, "checkpoints", agent_id, sorted(labels.items()))


def _check_inline(record: CheckpointRecord, payload: bytes | None) -> bytes:
    """The inline payload, if it matches its manifest; else DataLoss."""
    if payload is None:
        raise DataLoss(f"checkpoint {record.checkpoint_id!r}: its inline payload is missing")
    if len(payload) != record.size or hashlib.sha256(payload).hexdigest() != record.sha256:
        raise DataLoss(
            f"checkpoint {record.checkpoint_id!r}: its inline payload does not match the "
            "size and sha256 of its manifest"
        )
    return payload


class _WriteBehind:
    """An upload's chunks, written in order by a worker thread while the loop receives.

    ``put`` queues a chunk and starts a worker call unless one is draining the queue; that
    call writes (and hashes) chunks until the queue is empty, so a steady upload costs no
    thread hop per chunk, and a client that stops sending holds no thread. ``put`` waits
    while ``limit`` bytes are unwritten. The lock guards the queue and the flags.
    """

    def __init__(self, writer: BlobWriter, limit: int) -> None:
        self.writer = writer
        self.limit = limit
        self.loop = asyncio.get_running_loop()
        self.lock = threading.Lock()
        self.queue: collections.deque[bytes | memoryview] = collections.deque()
        self.unwritten = 0  # bytes queued or being written
        self.draining = False  # a worker call is writing (or about to)
        self.failed = False  # the writer raised: its call holds the error
        self.stopped = False  # the upload was given up: write nothing more
        self.room: asyncio.Future[None] | None = None  # put() waiting for the writer
        self.call: asyncio.Future[None] | None = None  # the latest worker call

    async def put(self, chunk: bytes | memoryview) -> None:
        with self.lock:
            self.queue.append(chunk)
            self.unwritten += len(chunk)
            start = not self.draining and not self.failed
            if start:
                self.draining = True
            room = None
            if self.unwritten >= self.limit and not start and not self.failed:
                room = self.room = self.loop.create_future()
        if start:
            self.call = self.loop.run_in_executor(None, self._drain)
        if room is not None:
            await room
        if self.failed:
            await self.flush()  # raises the writer's error

    async def flush(self) -> None:
        """Wait until every queued chunk is written; raises the writer's error."""
        if self.call is not None:
            await asyncio.shield(self.call)

    def stop(self) -> asyncio.Future[None] | None:
        """Write nothing more; the worker call to wait for before dropping the blob."""
        with self.lock:
            self.stopped = True
            self.queue.clear()
        return self.call

    def _drain(self) -> None:
        """Worker thread: write queued chunks until there are none."""
        try:
            while True:
                with self.lock:
                    if self.stopped or not self.queue:
                        self.draining = False
                        return
                    chunk = self.queue.popleft()
                self.writer.write(chunk)
                with self.lock:
                    self.unwritten -= len(chunk)
                    room = self.room if self.unwritten < self.limit else None
                    if room is not None:
                        self.room = None
                if room is not None:
                    self.loop.call_soon_threadsafe(_wake, room)
        except BaseException:
            with self.lock:
                self.failed = True
                self.draining = False
            raise
        finally:
            with self.lock:
                room, self.room = self.room, None
            if room is not None:
                self.loop.call_soon_threadsafe(_wake, room)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _abandon(writer: BlobWriter, busy: asyncio.Future[None] | None) -> None:
    """Drop a failed upload's temporary blob (its writer thread, if any, has finished)."""
    if busy is not None and not busy.cancelled():
        busy.exception()  # the upload failed anyway: mark the writer's error as seen
    writer.abort()


def _require_restorable(
    agent: AgentRecord, record: CheckpointRecord, expected_version: int | None
) -> None:
    agent_id = agent.agent_id
    if agent.status == Status.TERMINATED.value:
        raise FailedPrecondition(
            f"agent {agent_id!r} is TERMINATED; its state can no longer be written",
            reason="AGENT_TERMINATED",
            subject=f"agents/{agent_id}",
            metadata={"current_status": agent.status},
        )
    if expected_version is not None and expected_version != agent.state_version:
        current = agent.state_version
        now = "it has no state" if current == 0 else f"the latest is version {current}"
        seen = "no state" if expected_version == 0 else f"version {expected_version}"
        raise Conflict(
            f"agent {agent_id!r}: expected {seen}, but {now}; read it again and retry",
            reason="VERSION_CONFLICT",
            metadata={"current_version": str(current)},
        )
    if record.state_version == 0:
        raise FailedPrecondition(
            f"checkpoint {record.checkpoint_id!r} captured no state (the agent had none); "
            "there is nothing to restore, only its payload to download",
            reason="CHECKPOINT_WITHOUT_STATE",
            subject=f"checkpoints/{record.checkpoint_id}",
        )


def _reinitialize(
    ctx: WriteContext, agent: AgentRecord, checkpoint_id: str, request_id: str
) -> None:
    reason = f"restored from checkpoint {checkpoint_id}"
    if not agent_rows.set_status(
        ctx.conn,
        agent,
        Status.INITIALIZED.value,
        ctx.now,
        stamp=STAMPS.get(Status.INITIALIZED),
        error=None,
    ):
        raise Conflict(
            f"agent {agent.agent_id!r} changed concurrently; retry", reason="CONCURRENT_UPDATE"
        )
    event = ctx.emit(
        agent.namespace,
        "agent.transitioned",
        _data(**{"from": Status.ERROR.value, "to": Status.INITIALIZED.value, "reason": reason}),
        agent_id=agent.agent_id,
    )
    agent_rows.add_transition(
        ctx.conn,
        TransitionRecord(
            0,
            agent.namespace,
            agent.agent_id,
            Status.ERROR.value,
            Status.INITIALIZED.value,
            reason,
            request_id,
            event.sequence,
            ctx.now,
        ),
    )
