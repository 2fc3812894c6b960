"""Retention and cleanup: checkpoint pruning, blob garbage collection, idempotency expiry,
run archiving, and the periodic background job that runs the first three.

Safe with many replicas: the background job runs a pass only while it holds the
``retention`` lease (storage/leases.py); every deletion is a conditional write computed
inside its own transaction, so two passes racing anyway delete nothing twice and never
an agent's newest checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from stateward.server import metrics
from stateward.server.config import Settings
from stateward.server.domain import paging
from stateward.server.domain import validation as check
from stateward.server.domain.errors import (
    AlreadyExists,
    Conflict,
    DataLoss,
    InvalidArgument,
    Violations,
)
from stateward.server.services import weights
from stateward.storage import Database, WriteContext, leases, now_us
from stateward.storage import archive as archives
from stateward.storage import checkpoints as rows
from stateward.storage import idempotency as stored_answers
from stateward.storage.blobs import TMP_DIR, BlobStore, ListedBlob, translate
from stateward.storage.checkpoints import CheckpointRecord

log = logging.getLogger(__name__)

US = 1_000_000
LEASE = "retention"
PRUNE_BATCH = 500
DRY_RUN_LIMIT = 10_000
EXPIRE_BATCH = 10_000
MAX_ARCHIVED_RUNS = 100_000  # per ArchiveRuns call; call again for more


@dataclass(slots=True)
class PruneResult:
    """``deleted`` lists what fits in one answer; the count and the bytes are whole."""

    deleted: weights.Capped[CheckpointRecord]
    freed_bytes: int = 0

    def add(self, record: CheckpointRecord) -> None:
        self.freed_bytes += record.size
        self.deleted.add(replace(record, payload=None))  # answers carry no payloads


@dataclass(slots=True)
class GarbageResult:
    """``deleted`` lists what fits in one answer; the count and the bytes are whole."""

    deleted: weights.Capped[ListedBlob]
    freed_bytes: int = 0

    def add(self, blob: ListedBlob) -> None:
        self.freed_bytes += blob.stored_size
        self.deleted.add(blob)


def _blob_bytes(blob: ListedBlob) -> int:
    return paging.text_bytes(blob.key)


@dataclass(slots=True)
class ArchiveResult:
    url: str
    runs: int = 0
    task_runs: int = 0
    events: int = 0


_PRUNED = metrics.RETENTION_ACTIONS.labels(action="checkpoint_pruned")
_ARCHIVED = metrics.RETENTION_ACTIONS.labels(action="run_archived")
_COLLECTED = metrics.RETENTION_ACTIONS.labels(action="blob_collected")


def _data(**fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def _stamp(us: int) -> str:
    return datetime.fromtimestamp(us / US, UTC).strftime("%Y%m%dT%H%M%S.%fZ")


class RetentionService:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        settings: Settings,
        storage_options: dict[str, Any],
        *,
        answer_bytes: int = 8 << 20,
    ) -> None:
        self.answer_bytes = answer_bytes  # the record bytes one response may carry
        self.db = db
        self.blobs = blobs
        self.settings = settings
        self.storage_options = storage_options
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # -- checkpoints ----------------------------------------------------------------------
    async def prune(
        self,
        namespace: str | None,
        *,
        agent_id: str = "",
        keep_last: int | None = None,
        max_age_us: int | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        """Delete checkpoints by policy (defaults from the settings); never an agent's newest.

        ``namespace`` None covers every namespace (the background job).
        """
        v = Violations()
        check.check_id(v, "agent_id", agent_id, required=False)
        if keep_last is not None and keep_last < 0:
            v.add("keep_last", f"must be 0 (the configured policy) or more (got {keep_last})")
        if max_age_us is not None and max_age_us < 0:
            v.add("max_age", "must not be negative")
        v.raise_if_any()
        keep = keep_last or self.settings.checkpoint_keep_last
        # An explicit max_age (even 0: "everything but the newest") wins; the setting's 0
        # means "no age limit".
        age: int | None = max_age_us
        if age is None and self.settings.checkpoint_max_age > 0:
            age = int(self.settings.checkpoint_max_age * US)
        result = PruneResult(weights.Capped(weights.manifest, self.answer_bytes))
        if keep <= 0 and age is None:
            return result  # no policy: keep everything

        def policy(now: int) -> dict[str, Any]:
            return {
                "namespace": namespace,
                "agent_id": agent_id or None,
                "keep_last": keep,
                "older_than": now - age if age is not None else None,
            }

        def candidates(conn: Any, now: int, limit: int) -> list[CheckpointRecord]:
            return rows.prunable(conn, **policy(now), limit=limit)

        if dry_run:

            def look(conn: Any) -> tuple[list[CheckpointRecord], tuple[int, int]]:
                now = now_us()
                return candidates(conn, now, DRY_RUN_LIMIT), rows.prunable_totals(
                    conn, **policy(now)
                )

            listed, (count, size) = await self.db.read(look)
            for record in listed:
                result.add(record)
            # The listing stops at DRY_RUN_LIMIT; the counts come whole from the database.
            result.freed_bytes = size
            result.deleted.count = count
            result.deleted.truncated |= count > len(result.deleted.items)
            return result

        def write(ctx: WriteContext) -> list[CheckpointRecord]:
            found = candidates(ctx.conn, ctx.now, PRUNE_BATCH)  # a plain read: no locks yet
            by_namespace: dict[str, list[str]] = {}
            for record in found:  # events (counter locks) before row locks, as every write
                ctx.emit(
                    record.namespace,
                    "checkpoint.deleted",
                    _data(checkpoint_id=record.checkpoint_id, reason="retention"),
                    agent_id=record.agent_id,
                )
                by_namespace.setdefault(record.namespace, []).append(record.checkpoint_id)
            deleted = sum(
                rows.delete_checkpoints(ctx.conn, ns, ids) for ns, ids in by_namespace.items()
            )
            if deleted != len(found):  # another deletion got some first: report nothing twice
                raise Conflict(
                    "checkpoints were deleted concurrently while pruning; retry",
                    reason="CONCURRENT_UPDATE",
                )
            return found

        while True:
            batch = await self.db.write(write)
            _PRUNED.inc(len(batch))
            for record in batch:  # manifests are gone; blobs follow (GC catches failures)
                result.add(record)
                if record.inline:  # the payload went with its row
                    continue
                try:
                    await asyncio.to_thread(self.blobs.delete, record.blob_key)
                except Exception as error:
                    log.warning("could not delete blob %s (GC will): %r", record.blob_key, error)
            if len(batch) < PRUNE_BATCH:
                return result

    # -- blobs ------------------------------------------------------------------------------
    async def collect_garbage(
        self, namespace: str | None, *, grace_us: int | None = None, dry_run: bool = False
    ) -> GarbageResult:
        """Delete blobs without a manifest, untouched for longer than the grace period.

        ``namespace`` limits the sweep to that namespace's blobs plus the temporary area
        (which belongs to no namespace); None sweeps everything. Blobs this process is
        writing are never touched; the grace period must cover uploads on other replicas.
        """
        if grace_us is not None and grace_us < 0:
            raise InvalidArgument.one("grace_period", "must not be negative")
        grace = grace_us if grace_us is not None else int(self.settings.blob_gc_grace * US)
        cutoff = now_us() - grace
        areas = [namespace, TMP_DIR] if namespace else [""]
        listed: list[ListedBlob] = await asyncio.to_thread(
            lambda: [blob for area in areas for blob in self.blobs.list(area)]
        )
        old = [
            blob
            for blob in listed
            if blob.modified_us is not None
            and blob.modified_us <= cutoff
            and not self.blobs.is_active(blob.key)
        ]
        orphans = [blob for blob in old if blob.temporary]
        committed = [blob for blob in old if not blob.temporary]
        if committed:
            referenced = await self.db.read(lambda conn: _referenced(conn, committed))
            orphans += [blob for blob in committed if blob.key not in referenced]
        result = GarbageResult(weights.Capped(_blob_bytes, self.answer_bytes))
        for blob in orphans:
            if not dry_run:
                if not blob.temporary and await self._manifest_appeared(blob):
                    continue
                await asyncio.to_thread(self.blobs.delete, blob.key)
                _COLLECTED.inc()
            result.add(blob)
        if result.deleted.count and not dry_run:
            log.info("collected %d orphan blobs", result.deleted.count)
        return result

    async def _manifest_appeared(self, blob: ListedBlob) -> bool:
        """Last look before deleting: a manifest committed since the listing keeps its blob."""
        return bool(await self.db.read(lambda conn: _referenced(conn, [blob])))

    # -- idempotency answers ---------------------------------------------------------------
    async def expire_answers(self) -> int:
        before = now_us() - int(self.settings.idempotency_window * US)
        total = 0
        while True:
            removed = await self.db.write(
                lambda ctx: stored_answers.expire(ctx.conn, before, EXPIRE_BATCH)
            )
            total += removed
            if removed < EXPIRE_BATCH:
                return total

    # -- archives --------------------------------------------------------------------------
    async def archive_runs(
        self, namespace: str, *, ended_before: int | None, url: str, dry_run: bool
    ) -> ArchiveResult:
        """Archive finished runs that ended before the cutoff, verify, then delete them."""
        if ended_before is None:
            raise InvalidArgument.one(
                "ended_before", "is required: finished runs that ended before it are archived"
            )
        url = (
            url
            or f"{self.settings.resolved_archive_url.rstrip('/')}/runs-{_stamp(now_us())}.jsonl.gz"
        )
        try:
            archives.check_url(url)
            archives.check_under_root(url, self.settings.resolved_archive_url.rstrip("/"))
        except archives.ArchiveError as error:
            raise InvalidArgument.one("archive_url", str(error)) from None
        run_ids = await self.db.read(
            lambda conn: archives.finished_run_ids(conn, namespace, ended_before, MAX_ARCHIVED_RUNS)
        )
        if dry_run or not run_ids:
            tasks, events = await self.db.read(
                lambda conn: archives.count_children(conn, namespace, run_ids)
            )
            return ArchiveResult(url if dry_run else "", len(run_ids), tasks, events)
        try:
            summary = await self.db.read(
                lambda conn: archives.write_archive(
                    conn,
                    namespace,
                    run_ids,
                    url,
                    ended_before=ended_before,
                    now=now_us(),
                    storage_options=self.storage_options,
                )
            )
            await asyncio.to_thread(archives.verify_archive, summary, self.storage_options)
        except archives.ArchiveError as error:
            if "already exists" in str(error):
                raise AlreadyExists(str(error)) from None
            raise DataLoss(str(error)) from None
        except (OSError, ConnectionError, TimeoutError) as error:
            raise translate(error, "write the run archive") from error
        deleted = await self.db.write(
            lambda ctx: archives.delete_archived(
                ctx.conn, namespace, summary.run_ids, summary.last_events
            )
        )
        _ARCHIVED.inc(deleted[0])
        log.info(
            "archived runs",
            extra={"url": url, "runs": deleted[0], "task_runs": deleted[1], "events": deleted[2]},
        )
        return ArchiveResult(url, summary.runs, summary.task_runs, summary.events)

    # -- the background job ------------------------------------------------------------------
    async def run_once(self) -> dict[str, int]:
        """One pass over every namespace: prune, collect garbage, expire answers."""
        pruned = await self.prune(None)
        collected = await self.collect_garbage(None)
        expired = await self.expire_answers()
        return {
            "checkpoints_pruned": pruned.deleted.count,
            "blobs_collected": collected.deleted.count,
            "answers_expired": expired,
        }

    async def hold_lease(self) -> bool:
        interval_us = int(self.settings.retention_interval * US)
        # A holder renews every interval; others take over 1.5 intervals after it stops.
        return bool(
            await self.db.write(
                lambda ctx: leases.try_acquire(
                    ctx.conn,
                    ctx.dialect,
                    LEASE,
                    self.owner,
                    ctx.now,
                    ctx.now + interval_us * 3 // 2,
                )
            )
        )

    async def run_forever(self) -> None:
        """Background job: a pass every ``retention_interval`` seconds while holding the lease."""
        while True:
            await asyncio.sleep(self.settings.retention_interval)
            try:
                if await self.hold_lease():
                    done = await self.run_once()
                    if any(done.values()):
                        log.info("retention pass", extra=done)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("retention pass failed; retrying next interval", exc_info=True)


def _referenced(conn: Any, blobs: list[ListedBlob]) -> set[str]:
    """The keys among ``blobs`` that a manifest names."""
    wanted: dict[str, list[str]] = {}
    for blob in blobs:
        namespace, _agent, checkpoint_id = blob.key.split("/")
        wanted.setdefault(namespace, []).append(checkpoint_id)
    found: set[str] = set()
    for namespace, ids in wanted.items():
        for start in range(0, len(ids), 500):
            found.update(rows.manifests_for(conn, namespace, ids[start : start + 500]).values())
    return found
