"""Versioned agent state: compare-and-set writes, history, merge patches, hot reads.

Writes are one closure each on the group-committing writer: lock the agent row, check
the expected version, insert the version, move the agent's counters, prune history,
emit the event. The latest state of each agent is cached in memory (``StateCache``):

- on SQLite this process is the only writer (``SingleServerLock`` makes sure of it),
  so the cache, updated after each commit, is authoritative: a hot GetState does not
  touch the database;
- on PostgreSQL other replicas write too, so a cached state is served only after a
  one-row probe of the agent (``state_version`` and ``created_at``) says it is still
  the live one. A write acknowledged by any replica is visible to the next read.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import operator
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from stateward.server import metrics
from stateward.server.cache import ByteLRU
from stateward.server.config import ConfigError
from stateward.server.deps import Deps
from stateward.server.domain import merge_patch, paging
from stateward.server.domain import schema_migrations as migrations
from stateward.server.domain import validation as check
from stateward.server.domain.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RecordTooLarge,
    ResourceExhausted,
    Violations,
)
from stateward.server.domain.lifecycle import Status
from stateward.server.services import weights
from stateward.server.services.idempotency import Replay, Stored, guarded
from stateward.storage import Database, EventDraft, WriteContext
from stateward.storage import idempotency as answers
from stateward.storage import states as rows
from stateward.storage.states import StateHead, StateRecord

log = logging.getLogger(__name__)

MAX_BATCH_GET = 1000
DEFAULT_MIGRATE_PAGE = 100
ENTRY_OVERHEAD = 256  # bytes a cached entry costs beyond its document, roughly
# Event types this service writes; any other ``state.*`` event (from a module that
# writes states rows itself, e.g. a checkpoint restore) drops the cached entry.
OWN_EVENTS = frozenset({"state.saved", "state.patched", "state.cleared", "state.migrated"})


@dataclass(frozen=True, slots=True)
class CachedState:
    """The latest state of one agent, as GetState answers it (already upgraded)."""

    record: StateRecord
    incarnation: int  # the agent's created_at: an id reused after a delete is another agent
    writable: bool  # not TERMINATED when cached (termination drops the entry)


StateCache: TypeAlias = ByteLRU[tuple[str, str], CachedState]


@dataclass(slots=True)
class MigrationPage:
    migrated: int
    up_to_date: int
    remaining: int
    target_schema_version: int
    next_page_token: str
    failures: list[migrations.MigrationFailed] = field(default_factory=list)


def _event_data(**fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


def serialise(value: Any) -> bytes:
    """Compact UTF-8 JSON; lone surrogates (valid as JSON escapes) are kept as escapes."""
    try:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode()


FAILURE_BYTES = 24  # a failure's framing and schema version in an answer


def _fit_failures(
    failures: list[migrations.MigrationFailed], budget: int
) -> list[migrations.MigrationFailed]:
    """The failures with their messages shortened, if need be, so that all of them fit in
    one answer: every failed agent is named, whatever the migration's messages."""
    fixed = sum(FAILURE_BYTES + len(f.agent_id) for f in failures)
    if fixed + sum(len(f.problem.encode()) for f in failures) <= budget:
        return failures
    room = max(0, (budget - fixed) // max(1, len(failures)))
    for failure in failures:
        failure.problem = migrations.clip(failure.problem, room)
    return failures


def _agent_missing(agent_id: str) -> NotFound:
    return NotFound(f"agent {agent_id!r} does not exist")


def _no_state(agent_id: str) -> NotFound:
    return NotFound(f"agent {agent_id!r} has no state: it was never saved, or it was cleared")


# google.protobuf.Timestamp's valid range, 0001-01-01 to 9999-12-31 UTC, in microseconds.
MIN_TIME_US = -62_135_596_800_000_000
MAX_TIME_US = 253_402_300_799_999_999


def _utc(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat().replace("+00:00", "Z")


class StateService:
    def __init__(
        self,
        db: Database,
        *,
        cache: StateCache,
        registry: migrations.MigrationRegistry,
        max_bytes: int,
        history: int,
        max_message_bytes: int,
    ) -> None:
        self.db = db
        self.cache = cache
        self.registry = registry
        self.history = max(1, history)
        self.response_budget = paging.page_budget(max_message_bytes)
        # A document must also fit in one answer: patches and migrations grow documents
        # past what any one request carried.
        self.max_bytes = min(max_bytes, self.response_budget - weights.STATE_BYTES)
        if self.max_bytes < max_bytes:
            log.warning(
                "state documents are limited to %d bytes, less than state_max_bytes (%d): "
                "one answer carries at most %d bytes under max_message_bytes (%d)",
                self.max_bytes,
                max_bytes,
                self.response_budget,
                max_message_bytes,
            )
        # Only on SQLite is this process the sole writer; see the module docstring.
        self.cache_is_authoritative = db.dialect == "sqlite"

    # -- writes --------------------------------------------------------------------
    async def save(
        self,
        namespace: str,
        agent_id: str,
        document: bytes,
        *,
        expected_version: int | None,
        schema_version: int,
        replay: Replay | None = None,
    ) -> StateRecord | Stored:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        self._check_document(v, "document_json", document)
        _check_expected_version(v, expected_version)
        if schema_version < 0:
            v.add("schema_version", f"must be 0 (the current shape) or more (got {schema_version})")
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()
        await self._refuse_if_stale(namespace, agent_id, expected_version, replay)

        def write(ctx: WriteContext) -> StateRecord:
            # One statement checks the agent and takes the version; only a refusal reads why.
            taken = rows.take_next_version(ctx.conn, namespace, agent_id, expected=expected_version)
            if taken is None:
                head = self._writable_head(ctx.conn, namespace, agent_id)
                _compare(agent_id, head, expected_version)
                raise Conflict(  # only when another replica changed it between the two
                    f"agent {agent_id!r} changed concurrently; retry", reason="CONCURRENT_UPDATE"
                )
            # 0 means "the shape this agent type has now": the newest registered schema
            # version, so a fresh document is never "upgraded" again on read.
            shape = schema_version or self.registry.target(taken.type)
            return self._commit_version(
                ctx, namespace, agent_id, taken, document, shape, "state.saved"
            )

        return await self.db.write(guarded(namespace, replay, write))

    async def patch(
        self,
        namespace: str,
        agent_id: str,
        patch: bytes,
        *,
        expected_version: int | None,
        replay: Replay | None = None,
    ) -> StateRecord | Stored:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        changes = self._check_document(v, "patch_json", patch)
        _check_expected_version(v, expected_version)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()
        await self._refuse_if_stale(namespace, agent_id, expected_version, replay)

        def write(ctx: WriteContext) -> StateRecord:
            head = self._writable_head(ctx.conn, namespace, agent_id)
            _compare(agent_id, head, expected_version)
            if head.state_version:
                base = rows.get_version(ctx.conn, namespace, agent_id, head.state_version)
                if base is None:  # the agent row points at a version that is gone
                    raise _no_state(agent_id)
                target, schema_version = self._upgrade(head.type, base, agent_id)
            else:
                target, schema_version = {}, self.registry.target(head.type)
            merged = merge_patch.apply(target, changes)
            try:
                document = serialise(merged)
            except ValueError:
                raise InvalidArgument.one(
                    "patch_json",
                    "the patched document holds a number too large for a "
                    "double-precision float; send the whole document with SaveState instead",
                ) from None
            if len(document) > self.max_bytes:
                raise InvalidArgument.one(
                    "patch_json",
                    f"the patched document would be {len(document)} bytes, over the "
                    f"limit of {self.max_bytes} bytes",
                )
            taken = _take_next(ctx, head)
            return self._commit_version(
                ctx, namespace, agent_id, taken, document, schema_version, "state.patched"
            )

        return await self.db.write(guarded(namespace, replay, write))

    async def clear(
        self, namespace: str, agent_id: str, replay: Replay | None = None
    ) -> int | Stored:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()

        def write(ctx: WriteContext) -> int:
            head = self._writable_head(ctx.conn, namespace, agent_id)
            deleted = rows.delete_unpinned(ctx.conn, namespace, agent_id)
            rows.set_versions(ctx.conn, namespace, agent_id, live=0, last=head.state_last_version)
            data = _event_data(version=0, size=0, deleted_versions=deleted)
            ctx.emit(namespace, "state.cleared", data, agent_id=agent_id)
            key = (namespace, agent_id)
            ctx.after_commit(lambda: self.cache.discard(key))
            return deleted

        return await self.db.write(guarded(namespace, replay, write))

    async def _refuse_if_stale(
        self, namespace: str, agent_id: str, expected: int | None, replay: Replay | None
    ) -> None:
        """Refuse a compare-and-set that is already stale without queueing a write.

        Under contention most attempts are stale, and every write queues behind the single
        writer (and, on PostgreSQL, behind every replica's batches). So a stale attempt is
        answered here: from the cache on SQLite (it holds the committed version, updated
        before a write is acknowledged), from a one-row probe on PostgreSQL. Refusing is
        correct as of the moment we looked, unless the call retries a write that already
        succeeded: then its stored answer wins, and the write closure replays it.
        """
        if expected is None:
            return
        request_id = replay.request_id if replay is not None else ""
        if self.cache_is_authoritative:
            hit = self.cache.peek((namespace, agent_id))
            if hit is None or hit.record.version == expected or not hit.writable:
                return  # the write decides (a terminated agent's refusal comes first)
            current = hit.record.version
            if request_id:
                stored = await self.db.read(lambda conn: answers.get(conn, namespace, request_id))
                if stored is not None:
                    return
            raise _conflict(agent_id, current, expected)

        def look(conn: Connection) -> int | None:
            probe = rows.probe(conn, namespace, agent_id)
            if probe is None or probe.state_version == expected:
                return None  # missing agents are the write's to report
            if probe.status == Status.TERMINATED.value:
                return None  # so is a terminated one, whatever the version
            if request_id and answers.get(conn, namespace, request_id) is not None:
                return None
            return probe.state_version

        latest = await self.db.read(look)
        if latest is not None:
            raise _conflict(agent_id, latest, expected)

    def _writable_head(self, conn: Connection, namespace: str, agent_id: str) -> StateHead:
        head = rows.head(conn, namespace, agent_id, for_update=True)
        if head is None:
            raise _agent_missing(agent_id)
        if head.status == Status.TERMINATED.value:
            raise FailedPrecondition(
                f"agent {agent_id!r} is TERMINATED; its state can be read but no longer written",
                reason="AGENT_TERMINATED",
                subject=f"agents/{agent_id}",
                metadata={"current_status": head.status},
            )
        return head

    def _commit_version(
        self,
        ctx: WriteContext,
        namespace: str,
        agent_id: str,
        taken: rows.NextVersion,
        document: bytes,
        schema_version: int,
        event_type: str,
        **event_extra: object,
    ) -> StateRecord:
        """Write ``document`` as the version ``taken`` (already live on the agent row),
        prune, emit, refresh the cache."""
        conn, version = ctx.conn, taken.version
        if event_extra:
            data = _event_data(version=version, size=len(document), **event_extra)
        else:  # the hot path: two integers need no JSON encoder
            data = b'{"version":%d,"size":%d}' % (version, len(document))
        event = ctx.emit(namespace, event_type, data, agent_id=agent_id)
        record = StateRecord(
            namespace,
            agent_id,
            version,
            document,
            schema_version,
            len(document),
            event.sequence,
            ctx.now,
        )
        rows.insert_version(conn, record)
        rows.prune(
            conn, namespace, agent_id, version - self.history, sweep=version % self.history == 0
        )
        key = (namespace, agent_id)
        if self.registry.needs_upgrade(taken.type, schema_version):
            # Readers see the upgraded form; let the next read upgrade and cache it.
            ctx.after_commit(lambda: self.cache.discard(key))
        else:
            entry = CachedState(record, taken.created_at, writable=True)
            ctx.after_commit(lambda: self.cache.put(key, entry, len(document) + ENTRY_OVERHEAD))
        return record

    def _check_document(self, v: Violations, field: str, raw: bytes) -> Any:
        if not raw:
            v.add(field, "is required: a JSON object such as {}")
            return None
        return check.parse_json(v, field, raw, limit=self.max_bytes)

    # -- reads ---------------------------------------------------------------------
    async def get(
        self, namespace: str, agent_id: str, *, version: int | None = None, as_of: int | None = None
    ) -> StateRecord:
        """The latest state, an exact version, or the newest version at or before ``as_of``."""
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        if version is not None and version < 1:
            v.add("version", f"must be 1 or more (got {version})")
        if as_of is not None and not MIN_TIME_US <= as_of <= MAX_TIME_US:
            v.add("as_of", "must be a valid timestamp between 0001-01-01 and 9999-12-31 UTC")
        v.raise_if_any()
        if version is None and as_of is None:
            return await self._latest(namespace, agent_id)
        if version is not None and self.cache_is_authoritative:
            hit = self.cache.peek((namespace, agent_id))
            if hit is not None and hit.record.version == version:
                return hit.record

        def read(conn: Connection) -> tuple[StateHead | None, StateRecord | None]:
            head = rows.head(conn, namespace, agent_id)
            if head is None:
                return None, None
            if version is not None:
                return head, rows.get_version(conn, namespace, agent_id, version)
            assert as_of is not None
            return head, rows.as_of(conn, namespace, agent_id, as_of)

        head, record = await self.db.read(read)
        if head is None:
            raise _agent_missing(agent_id)
        if record is None:
            if version is not None:
                latest = (
                    f"the latest is {head.state_version}"
                    if head.state_version
                    else "it has none now"
                )
                raise NotFound(
                    f"agent {agent_id!r} has no state version {version}: it was never written or "
                    f"is older than the {self.history} versions kept ({latest})"
                )
            assert as_of is not None
            raise NotFound(
                f"agent {agent_id!r} has no state version committed at or before {_utc(as_of)}"
            )
        return self._upgraded(head, record)

    async def _latest(self, namespace: str, agent_id: str) -> StateRecord:
        key = (namespace, agent_id)
        if self.cache_is_authoritative:
            hit = self.cache.get(key)
            if hit is not None:
                return hit.record
            epoch = self.cache.epoch
            head, record = await self.db.read(lambda conn: rows.latest(conn, namespace, agent_id))
        else:
            epoch = self.cache.epoch
            head, record, cached = await self.db.read(lambda conn: self._probe_then_read(conn, key))
            if cached is not None:
                return cached.record
        if head is None:
            raise _agent_missing(agent_id)
        if record is None:
            raise _no_state(agent_id)
        record = self._upgraded(head, record)
        self._fill(key, record, head, epoch)
        return record

    def _probe_then_read(
        self, conn: Connection, key: tuple[str, str]
    ) -> tuple[StateHead | None, StateRecord | None, CachedState | None]:
        """The cached state if the agent row says it is still live, else the stored one.

        The probe is only worth its round trip when there is an entry to check.
        """
        probe = rows.probe(conn, *key) if self.cache.peek(key) is not None else None
        if probe is not None and probe.state_version != 0:
            version, incarnation = probe.state_version, probe.created_at

            def live(entry: CachedState) -> bool:
                return entry.record.version == version and entry.incarnation == incarnation

            cached = self.cache.get(key, valid=live)
            if cached is not None:
                return None, None, cached
        else:
            self.cache.note_miss()
        head, record = rows.latest(conn, *key)
        return head, record, None

    def _fill(self, key: tuple[str, str], record: StateRecord, head: StateHead, epoch: int) -> None:
        def newer(current: CachedState) -> bool:
            return current.record.event_sequence < record.event_sequence

        self.cache.fill(
            key,
            CachedState(record, head.created_at, head.status != Status.TERMINATED.value),
            len(record.document) + ENTRY_OVERHEAD,
            epoch=epoch,
            replaces=newer,
        )

    def _upgrade(
        self, agent_type: str, record: StateRecord, agent_id: str
    ) -> tuple[dict[str, Any], int]:
        """The parsed document of ``record`` in the newest schema of its agent type."""
        document = json.loads(record.document)
        if not self.registry.needs_upgrade(agent_type, record.schema_version):
            return document, record.schema_version
        return self.registry.upgrade(agent_type, document, record.schema_version, agent_id=agent_id)

    def _upgraded(self, head: StateHead, record: StateRecord) -> StateRecord:
        """``record`` as readers see it: upgraded on the fly if its schema is old (not stored)."""
        if not self.registry.needs_upgrade(head.type, record.schema_version):
            return record
        document, schema_version = self._upgrade(head.type, record, head.agent_id)
        try:
            raw = serialise(document)
        except (ValueError, TypeError, RecursionError) as error:  # not JSON: a set, NaN, ...
            raise migrations.MigrationFailed(
                head.type,
                record.schema_version,
                f"it returned a document that is not JSON ({type(error).__name__}: {error})",
                agent_id=head.agent_id,
            ) from None
        if weights.STATE_BYTES + len(raw) > self.response_budget:
            # Re-serialising can grow a document (1e15 reads back as 1000000000000000.0).
            raise RecordTooLarge(
                f"agent {head.agent_id!r}'s state version {record.version}, upgraded on read "
                f"from schema {record.schema_version} to {schema_version}, is {len(raw)} "
                f"bytes: more than the {self.response_budget} bytes one answer carries under "
                "max_message_bytes. ListStateVersions returns it as stored; save a smaller "
                "document, or raise max_message_bytes",
                metadata={"record_bytes": str(len(raw)), "answer_bytes": str(self.response_budget)},
            )
        return StateRecord(
            record.namespace,
            record.agent_id,
            record.version,
            raw,
            schema_version,
            len(raw),
            record.event_sequence,
            record.created_at,
        )

    async def list_versions(
        self,
        namespace: str,
        agent_id: str,
        *,
        include_documents: bool,
        page_size: int,
        page_token: str,
    ) -> tuple[list[StateRecord], str]:
        """Retained versions, newest first, as stored (documents are not upgraded)."""
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        size = check.check_page_size(v, page_size)
        v.raise_if_any()
        digest = paging.filter_digest(namespace, "state_versions", agent_id, include_documents)
        cursor = paging.decode(page_token, digest, (int,))
        before = cursor[0] if cursor else None

        def read(conn: Connection) -> list[StateRecord] | None:
            if rows.probe(conn, namespace, agent_id) is None:
                return None
            return rows.list_versions(
                conn,
                namespace,
                agent_id,
                before=before,
                limit=size,
                with_documents=include_documents,
                budget=self.response_budget,
            )

        found = await self.db.read(read)
        if found is None:
            raise _agent_missing(agent_id)
        return paging.page_of(
            found, size, weights.state, self.response_budget, digest, lambda r: [r.version]
        )

    async def batch_get(
        self, namespace: str, agent_ids: list[str]
    ) -> tuple[list[StateRecord], list[str]]:
        """The latest states of up to 1000 agents (request order) and the ids without one."""
        v = Violations()
        if not agent_ids:
            v.add("agent_ids", "is required: 1 to 1000 agent ids")
        elif len(agent_ids) > MAX_BATCH_GET:
            v.add("agent_ids", f"at most {MAX_BATCH_GET} ids per call (got {len(agent_ids)})")
        else:
            seen: dict[str, int] = {}
            for index, agent_id in enumerate(agent_ids):
                check.check_id(v, f"agent_ids[{index}]", agent_id)
                if agent_id in seen:
                    v.add(
                        f"agent_ids[{index}]",
                        f"repeats agent_ids[{seen[agent_id]}]; ids must be distinct",
                    )
                seen.setdefault(agent_id, index)
        v.raise_if_any()
        found: dict[str, StateRecord] = {}
        wanted = list(agent_ids)
        if self.cache_is_authoritative:
            wanted = []
            for agent_id in agent_ids:
                hit = self.cache.get((namespace, agent_id))
                if hit is not None:
                    found[agent_id] = hit.record
                else:
                    wanted.append(agent_id)
        if wanted:
            epoch = self.cache.epoch
            loaded = await self.db.read(lambda conn: rows.latest_many(conn, namespace, wanted))
            for head, record in loaded:
                record = self._upgraded(head, record)
                found[head.agent_id] = record
                self._fill((namespace, head.agent_id), record, head, epoch)
        states = [found[agent_id] for agent_id in agent_ids if agent_id in found]
        missing = [agent_id for agent_id in agent_ids if agent_id not in found]
        total = sum(map(weights.state, states)) + sum(map(paging.text_bytes, missing))
        if total > self.response_budget:
            raise ResourceExhausted(
                f"the {len(states)} states add up to {total} bytes, more than one response can "
                f"carry ({self.response_budget} bytes); ask for fewer agents per call"
            )
        return states, missing

    # -- bulk schema migration -------------------------------------------------------
    async def migrate(
        self, namespace: str, agent_type: str, *, page_size: int, page_token: str, dry_run: bool
    ) -> MigrationPage:
        """Upgrade the latest state of one page of agents of ``agent_type``, by agent id.

        Each upgrade is a new version (event ``state.migrated``); states already at the
        newest schema are left alone, so a repeated or resumed run changes nothing twice.
        Terminated agents are upgraded too: this is maintenance, not an agent's write.
        """
        v = Violations()
        check.check_text(v, "agent_type", agent_type, check.MAX_TYPE, required=True)
        if page_size < 0 or page_size > check.MAX_PAGE_SIZE:
            v.add("page_size", f"must be between 0 and {check.MAX_PAGE_SIZE} (got {page_size})")
        v.raise_if_any()
        size = page_size or DEFAULT_MIGRATE_PAGE
        digest = paging.filter_digest(namespace, "migrate_states", agent_type)
        cursor = paging.decode(page_token, digest, (str,))
        after = cursor[0] if cursor else None
        target = self.registry.target(agent_type)

        def read(conn: Connection) -> tuple[list[tuple[str, int | None]], int]:
            page = rows.migration_page(conn, namespace, agent_type, after_id=after, limit=size)
            last = page[size - 1][0] if len(page) > size else None
            return page[:size], (
                rows.count_agents_after(conn, namespace, agent_type, last)
                if last is not None
                else 0
            )

        page, remaining = await self.db.read(read)
        stale = [agent_id for agent_id, schema in page if schema is not None and schema < target]
        up_to_date = sum(1 for _, schema in page if schema is not None and schema >= target)
        migrated = len(stale)
        failures: list[migrations.MigrationFailed] = []
        if stale and dry_run:
            # The migrations run on the documents, in memory: a dry run tells which
            # upgrades would fail, not only how many states are behind.
            failures = await self.db.read(
                lambda conn: self._would_fail(conn, namespace, agent_type, stale)
            )
            migrated -= len(failures)
        elif stale:
            outcomes = await asyncio.gather(
                *(
                    self.db.write(self._migrate_one(namespace, agent_type, agent_id))
                    for agent_id in stale
                ),
                return_exceptions=True,
            )
            # A state the migration cannot upgrade is reported and left as it was; it
            # must not stop the others. Anything else (an outage) fails the call, which
            # is safe to repeat.
            failures = [o for o in outcomes if isinstance(o, migrations.MigrationFailed)]
            for outcome in outcomes:
                if isinstance(outcome, BaseException) and outcome not in failures:
                    raise outcome
            migrated = sum(1 for o in outcomes if o is True)
            up_to_date += len(stale) - migrated - len(failures)
        token = paging.encode(digest, [page[-1][0]]) if remaining else ""
        fitted = _fit_failures(failures, self.response_budget)
        return MigrationPage(migrated, up_to_date, remaining, target, token, fitted)

    def _migrate_one(self, namespace: str, agent_type: str, agent_id: str) -> Any:
        def write(ctx: WriteContext) -> bool:
            head = rows.head(ctx.conn, namespace, agent_id, for_update=True)
            if head is None or head.type != agent_type or not head.state_version:
                return False
            stored = rows.get_version(ctx.conn, namespace, agent_id, head.state_version)
            if stored is None or not self.registry.needs_upgrade(agent_type, stored.schema_version):
                return False  # someone else upgraded or replaced it meanwhile
            upgraded = self._checked_upgrade(head, stored)
            self._commit_version(
                ctx,
                namespace,
                agent_id,
                _take_next(ctx, head),
                upgraded.document,
                upgraded.schema_version,
                "state.migrated",
                from_schema_version=stored.schema_version,
            )
            return True

        return write

    def _would_fail(
        self, conn: Connection, namespace: str, agent_type: str, agent_ids: list[str]
    ) -> list[migrations.MigrationFailed]:
        failures = []
        for agent_id in agent_ids:
            head = rows.head(conn, namespace, agent_id)
            if head is None or head.type != agent_type or not head.state_version:
                continue
            stored = rows.get_version(conn, namespace, agent_id, head.state_version)
            if stored is None:
                continue
            try:
                self._checked_upgrade(head, stored)
            except migrations.MigrationFailed as failure:
                failures.append(failure)
        return failures

    def _checked_upgrade(self, head: StateHead, stored: StateRecord) -> StateRecord:
        """The upgrade MigrateStates would store; MigrationFailed if it cannot be stored."""
        try:
            upgraded = self._upgraded(head, stored)
        except RecordTooLarge as error:  # over what one answer carries
            upgraded_bytes = int(error.metadata["record_bytes"])
        else:
            if upgraded.size <= self.max_bytes:
                return upgraded
            upgraded_bytes = upgraded.size
        raise migrations.MigrationFailed(
            head.type,
            stored.schema_version,
            f"the upgraded document is {upgraded_bytes} bytes, over the limit of "
            f"{self.max_bytes} bytes",
            agent_id=head.agent_id,
        )

    # -- cache coherence with writes made elsewhere ------------------------------------
    def on_commit(self, rows: list[EventDraft]) -> None:
        """Drop cached states that a commit changed outside this service (writer thread):
        the agent was deleted or terminated, or another module wrote a version."""
        # A packed row (span > 1) holds AppendEvents' client events, whose types never use
        # the system prefixes: only single rows can make a state stale, and they are whole.
        if not any(map(_may_stale, set(map(_TYPE, rows)))):
            return  # the usual batch (appended events, own saves): one C pass over the types
        for event in rows:
            if event.agent_id is None:
                continue
            if (
                event.type == "agent.deleted"
                or (event.type.startswith("state.") and event.type not in OWN_EVENTS)
                or (event.type == "agent.transitioned" and _terminated(event.data))
            ):
                self.cache.discard((event.namespace, event.agent_id))


def _may_stale(kind: str) -> bool:
    """Whether an event of this type may make a cached state stale (see ``on_commit``)."""
    return kind in ("agent.deleted", "agent.transitioned") or (
        kind.startswith("state.") and kind not in OWN_EVENTS
    )


_TYPE = operator.attrgetter("type")


def _terminated(transition: bytes) -> bool:
    try:
        return bool(json.loads(transition).get("to") == Status.TERMINATED.value)
    except (ValueError, AttributeError):
        return False


def _take_next(ctx: WriteContext, head: StateHead) -> rows.NextVersion:
    """Make the next version live on an agent row already read (and locked) as ``head``."""
    version = head.state_last_version + 1
    rows.set_versions(ctx.conn, head.namespace, head.agent_id, live=version, last=version)
    return rows.NextVersion(head.type, head.created_at, version)


def _check_expected_version(v: Violations, expected: int | None) -> None:
    if expected is not None and expected < 0:
        v.add("expected_version", f"must be 0 (no state yet) or a version number (got {expected})")


def _compare(agent_id: str, head: StateHead, expected: int | None) -> None:
    if expected is not None and expected != head.state_version:
        raise _conflict(agent_id, head.state_version, expected)


def _conflict(agent_id: str, current: int, expected: int) -> Conflict:
    seen = "no state" if expected == 0 else f"version {expected}"
    now = "it has no state" if current == 0 else f"the latest is version {current}"
    return Conflict(
        f"agent {agent_id!r}: expected {seen}, but {now}; read it again and retry",
        reason="VERSION_CONFLICT",
        metadata={"current_version": str(current)},
    )


# -- one writer per SQLite database ------------------------------------------------------
class DatabaseInUse(OSError):
    """Another Stateward server already serves this SQLite database."""


class SingleServerLock:
    """An exclusive ``flock`` on ``<database file>.lock`` for as long as the server runs.

    The state cache on SQLite trusts that this process makes every write; a second
    server on the same file would break that silently, so it is refused at start-up.
    ``flock`` (not ``fcntl`` record locks) also excludes a second server in the same
    process, and the kernel drops the lock if the process dies.
    """

    def __init__(self, database_file: Path) -> None:
        self.path = Path(f"{database_file}.lock")
        self._fd: int | None = None

    @classmethod
    def for_url(cls, url: str) -> SingleServerLock | None:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return None
        name = parsed.database or ""
        if name in ("", ":memory:") or name.startswith("file:"):
            return None
        return cls(Path(name).resolve())

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUse(
                f"another Stateward server is already serving the SQLite database "
                f"{self.path.with_suffix('')} (it holds {self.path}); SQLite supports one "
                "server process: stop the other one, or use PostgreSQL to run several replicas"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def state_service(deps: Deps) -> StateService:
    """The StateService of one server, wired into its hooks and shared singletons."""
    settings = deps.settings
    try:
        registry = migrations.load(settings.state_migrations)
    except migrations.MigrationSetupError as error:
        raise ConfigError(f"state_migrations: {error}") from error
    cache = deps.extras.get("state_cache")
    if not isinstance(cache, ByteLRU):
        cache = ByteLRU(settings.cache_bytes)
        deps.extras["state_cache"] = cache
    metrics.watch_cache("state", cache)
    service = StateService(
        deps.db,
        cache=cache,
        registry=registry,
        max_bytes=settings.state_max_bytes,
        history=settings.state_history,
        max_message_bytes=settings.max_message_bytes,
    )
    deps.db.on_commit(service.on_commit)
    lock = SingleServerLock.for_url(deps.db.url)
    if lock is not None:

        async def take_lock() -> None:
            lock.acquire()

        async def drop_lock() -> None:
            lock.release()

        deps.startup.insert(0, take_lock)
        deps.shutdown.append(drop_lock)
    deps.extras["state_service"] = service
    return service
