"""Agent lifecycle use cases: create, read, list, update, transition, delete."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from stateward.server.domain import paging
from stateward.server.domain import validation as check
from stateward.server.domain.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidTransition,
    NotFound,
    Violations,
)
from stateward.server.domain.lifecycle import (
    ACTIONS,
    STAMPS,
    Action,
    Status,
    allowed_targets,
    target_of,
)
from stateward.server.services import weights
from stateward.server.services.idempotency import Replay, Stored, guarded
from stateward.storage import Database, DuplicateKey, WriteContext
from stateward.storage import agents as agent_rows
from stateward.storage.records import AgentRecord, ErrorRecord, TransitionRecord


@dataclass(slots=True)
class TransitionResult:
    agent: AgentRecord
    transition: TransitionRecord


def _event_data(**fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def _transition_data(
    from_status: str, to_status: str, reason: str, error: ErrorRecord | None
) -> bytes:
    """``_event_data(from=..., to=..., reason=...[, error=..., error_kind=...])``, without
    building a dict for the encoder: statuses are plain upper-case words."""
    text = f'{{"from":"{from_status}","to":"{to_status}","reason":{_json(reason)}'
    if error is not None:
        text += f',"error":{_json(error.message)},"error_kind":{error.kind}'
    return f"{text}}}".encode()


_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _refusal(agent_id: str, action: Action, found: AgentRecord | None) -> Exception:
    """Why ``action`` did not apply to the agent, as read after the fact."""
    if found is None:
        return _not_found(agent_id)
    current = Status(found.status)
    if target_of(action, current) is None:
        return InvalidTransition(
            agent_id,
            current.value,
            ACTIONS[action][0].value,
            [s.value for s in allowed_targets(current)],
        )
    # Allowed from where it is now: only a concurrent change (another replica) explains it.
    return Conflict(f"agent {agent_id!r} changed concurrently; retry", reason="CONCURRENT_UPDATE")


def _not_found(agent_id: str) -> NotFound:
    return NotFound(f"agent {agent_id!r} does not exist")


class LifecycleService:
    def __init__(self, db: Database, *, page_bytes: int = 8 << 20) -> None:
        self.db = db
        self.page_bytes = page_bytes  # the record bytes one list response may carry

    def _require_fits(self, record: AgentRecord, *, error_room: bool = False) -> None:
        """``record`` fits in one answer; with ``error_room``, also with its error replaced
        by a report without details (weights.END_BYTES), so one can always be recorded."""
        weight = weights.agent(record)
        if error_room:
            weight += max(0, weights.END_BYTES - weights.error(record.error))
        weights.require_fits(f"agent {record.agent_id!r}", weight, self.page_bytes)

    async def create(
        self,
        namespace: str,
        agent_id: str,
        type: str,
        config: bytes,
        labels: dict[str, str],
        replay: Replay | None = None,
    ) -> AgentRecord | Stored:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        check.check_text(v, "type", type, check.MAX_TYPE, required=True)
        parsed = check.parse_json(v, "config_json", config, limit=check.MAX_CONFIG)
        check.check_labels(v, "labels", labels)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()
        config = config if config else b"{}"
        del parsed

        def write(ctx: WriteContext) -> AgentRecord:
            record = AgentRecord(
                namespace=namespace,
                agent_id=agent_id,
                type=type,
                config=config,
                labels=dict(labels),
                status=Status.CREATED.value,
                generation=1,
                state_version=0,
                state_last_version=0,
                created_at=ctx.now,
                updated_at=ctx.now,
            )
            self._require_fits(record, error_room=True)
            if agent_rows.get(ctx.conn, namespace, agent_id) is not None:
                raise AlreadyExists(f"agent {agent_id!r} already exists")
            try:
                agent_rows.insert_agent(ctx.conn, record)
            except DuplicateKey:  # another replica won the race
                raise AlreadyExists(f"agent {agent_id!r} already exists") from None
            event = ctx.emit(
                namespace,
                "agent.created",
                _event_data(type=type, status="CREATED"),
                agent_id=agent_id,
            )
            agent_rows.add_transition(
                ctx.conn,
                TransitionRecord(
                    0,
                    namespace,
                    agent_id,
                    None,
                    "CREATED",
                    "created",
                    replay.request_id if replay else "",
                    event.sequence,
                    ctx.now,
                ),
            )
            return record

        return await self.db.write(guarded(namespace, replay, write))

    async def get(self, namespace: str, agent_id: str) -> AgentRecord:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        v.raise_if_any()
        record = await self.db.read(lambda conn: agent_rows.get(conn, namespace, agent_id))
        if record is None:
            raise _not_found(agent_id)
        return record

    async def list_agents(
        self,
        namespace: str,
        *,
        status: str | None,
        type: str,
        labels: dict[str, str],
        page_size: int,
        page_token: str,
    ) -> tuple[list[AgentRecord], str]:
        v = Violations()
        check.check_text(v, "type", type, check.MAX_TYPE)
        check.check_labels(v, "labels", labels)
        size = check.check_page_size(v, page_size)
        v.raise_if_any()
        digest = paging.filter_digest(namespace, "agents", status, type, sorted(labels.items()))
        cursor = paging.decode(page_token, digest, (str,))
        after = cursor[0] if cursor else None
        rows = await self.db.read(
            lambda conn: agent_rows.list_page(
                conn,
                namespace,
                status=status,
                type=type or None,
                labels=labels,
                after_id=after,
                limit=size,
                budget=self.page_bytes,
            )
        )
        return paging.page_of(
            rows, size, weights.agent, self.page_bytes, digest, lambda r: [r.agent_id]
        )

    async def update(
        self,
        namespace: str,
        agent_id: str,
        *,
        etag: str,
        config: bytes | None,
        labels: dict[str, str] | None,
        replay: Replay | None = None,
    ) -> AgentRecord | Stored:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        if config is not None:
            check.parse_json(v, "config_json", config, limit=check.MAX_CONFIG)
            config = config or b"{}"
        if labels is not None:
            check.check_labels(v, "labels", labels)
        if etag and not etag.isdigit():
            v.add("etag", "is not an etag returned by this server")
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()

        def write(ctx: WriteContext) -> AgentRecord:
            record = agent_rows.get(ctx.conn, namespace, agent_id, for_update=True)
            if record is None:
                raise _not_found(agent_id)
            if etag and etag != record.etag:
                raise Conflict(
                    f"agent {agent_id!r} changed since etag {etag} was read (now {record.etag}); "
                    "read it again and retry",
                    reason="ETAG_MISMATCH",
                    metadata={"current_etag": record.etag},
                )
            if record.status == Status.TERMINATED.value:
                raise FailedPrecondition(
                    f"agent {agent_id!r} is TERMINATED and can no longer be updated",
                    reason="AGENT_TERMINATED",
                    subject=f"agents/{agent_id}",
                )
            self._require_fits(
                replace(
                    record,
                    config=record.config if config is None else config,
                    labels=record.labels if labels is None else labels,
                ),
                error_room=True,
            )
            if not agent_rows.update_fields(
                ctx.conn, record, ctx.now, config=config, labels=labels
            ):
                raise Conflict(
                    f"agent {agent_id!r} changed concurrently; retry",
                    reason="ETAG_MISMATCH",
                    metadata={"current_etag": record.etag},
                )
            changed = [
                name
                for name, value in (("config", config), ("labels", labels))
                if value is not None
            ]
            ctx.emit(namespace, "agent.updated", _event_data(changed=changed), agent_id=agent_id)
            return record

        return await self.db.write(guarded(namespace, replay, write))

    async def transition(
        self,
        namespace: str,
        agent_id: str,
        action: Action,
        *,
        reason: str = "",
        error: ErrorRecord | None = None,
        replay: Replay | None = None,
    ) -> TransitionResult | Stored:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        check.check_text(v, "reason", reason, check.MAX_REASON)
        if error is not None:
            check.check_text(v, "message", error.message, check.MAX_MESSAGE, required=True)
            if error.details:
                check.parse_json(v, "details_json", error.details, limit=check.MAX_CONFIG)
        request_id = replay.request_id if replay else ""
        check.check_request_id(v, request_id)
        v.raise_if_any()

        target, sources = ACTIONS[action]
        stamp = STAMPS.get(target)

        def write(ctx: WriteContext) -> TransitionResult:
            stamped = (
                ErrorRecord(error.message, error.kind, error.retryable, error.details, ctx.now)
                if error
                else None
            )
            if len(sources) == 1:
                # The source is implied: one statement moves the agent if it is there.
                (current,) = sources
                moved = agent_rows.move_status(
                    ctx.conn,
                    namespace,
                    agent_id,
                    current.value,
                    target.value,
                    ctx.now,
                    stamp=stamp,
                    error=stamped,
                )
                if moved is None:
                    raise _refusal(agent_id, action, agent_rows.get(ctx.conn, namespace, agent_id))
                record = moved
                if stamped is not None:  # undone with the batch's savepoint if it is too big
                    self._require_fits(record)
            else:
                found = agent_rows.get(ctx.conn, namespace, agent_id, for_update=True)
                if found is None or target_of(action, Status(found.status)) is None:
                    raise _refusal(agent_id, action, found)
                record, current = found, Status(found.status)
                if stamped is not None:
                    self._require_fits(replace(record, error=stamped))
                if not agent_rows.set_status(
                    ctx.conn, record, target.value, ctx.now, stamp=stamp, error=stamped
                ):
                    raise _refusal(agent_id, action, record)  # another replica raced us
            event = ctx.emit(
                namespace,
                "agent.transitioned",
                _transition_data(current.value, target.value, reason or action.value, stamped),
                agent_id=agent_id,
            )
            transition = agent_rows.add_transition(
                ctx.conn,
                TransitionRecord(
                    0,
                    namespace,
                    agent_id,
                    current.value,
                    target.value,
                    reason or action.value,
                    request_id,
                    event.sequence,
                    ctx.now,
                ),
            )
            return TransitionResult(record, transition)

        return await self.db.write(guarded(namespace, replay, write))

    async def delete(
        self, namespace: str, agent_id: str, replay: Replay | None = None
    ) -> str | Stored:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()

        def write(ctx: WriteContext) -> str:
            record = agent_rows.get(ctx.conn, namespace, agent_id, for_update=True)
            if record is None:
                raise _not_found(agent_id)
            if record.status != Status.TERMINATED.value:
                raise FailedPrecondition(
                    f"agent {agent_id!r} is {record.status}; only TERMINATED agents can be deleted "
                    "(terminate it first)",
                    reason="AGENT_NOT_TERMINATED",
                    subject=f"agents/{agent_id}",
                    metadata={"current_status": record.status},
                )
            agent_rows.delete_agent(ctx.conn, namespace, agent_id)
            ctx.emit(namespace, "agent.deleted", _event_data(), agent_id=agent_id)
            return agent_id

        return await self.db.write(guarded(namespace, replay, write))

    async def list_transitions(
        self, namespace: str, agent_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[TransitionRecord], str]:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        size = check.check_page_size(v, page_size)
        v.raise_if_any()
        digest = paging.filter_digest(namespace, "transitions", agent_id)
        cursor = paging.decode(page_token, digest, (int,))
        after = cursor[0] if cursor else None

        def read(conn):  # type: ignore[no-untyped-def]
            if agent_rows.get(conn, namespace, agent_id) is None:
                raise _not_found(agent_id)
            return agent_rows.list_transitions(
                conn, namespace, agent_id, after_id=after, limit=size
            )

        rows = await self.db.read(read)
        return paging.page_of(
            rows, size, weights.transition, self.page_bytes, digest, lambda r: [r.id]
        )
