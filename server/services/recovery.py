"""Recovery use cases: recovery plans, partial re-runs of workflow runs, compensation.

- ``plan`` gathers facts (read-only) and asks the pure planner (domain/planner.py).
- ``retry_run`` starts attempt n+1 of a FAILED or INTERRUPTED run in one write: completed
  task runs are copied in as COMPLETED (``carried_from`` names the task run that did the
  work), everything else the chain has seen is listed as still to do.
- ``compensation_plan`` / ``complete_compensation``: the compensations recorded by a
  failed run's completed tasks, newest completion first (paged), and marking one done.

Answers that are not paged stay under the message limit (``answer_bytes``): a plan's
failed task runs and a retry's lists keep what fits, and say they were cut.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection

from stateward.server.config import Settings
from stateward.server.domain import paging, planner
from stateward.server.domain import validation as check
from stateward.server.domain.errors import (
    Conflict,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Violations,
)
from stateward.server.domain.runs import (
    MAX_EVENT_DATA,
    RunStatus,
    TaskStatus,
    new_run_id,
    new_task_run_id,
    run_lease_expiry,
)
from stateward.server.services import weights
from stateward.server.services.checkpoints import CheckpointService
from stateward.server.services.idempotency import Replay, Stored, guarded
from stateward.server.services.sweeper import RunLeaseExpired, interrupt_now, require_live_lease
from stateward.storage import Database, WriteContext
from stateward.storage import agents as agent_rows
from stateward.storage import checkpoints as checkpoint_rows
from stateward.storage import recovery as recovery_rows
from stateward.storage import runs as run_rows
from stateward.storage import states as state_rows
from stateward.storage.checkpoints import CheckpointRecord
from stateward.storage.runs import RunRecord, TaskRunRecord

VERIFY_CANDIDATES = 5  # newest checkpoints whose blobs a plan reads to find a valid one
MAX_FAILED_TASK_RUNS = 100  # in one plan: the newest
EVERY_STEP = 1 << 62  # a compensation plan asked for whole (page_size 0): no row limit
EVENT_LIST_BYTES = MAX_EVENT_DATA - 4096  # task id lists in a run.retried event
RETRYABLE_RUNS = (RunStatus.FAILED.value, RunStatus.INTERRUPTED.value)
COMPENSABLE_RUNS = (
    RunStatus.FAILED.value,
    RunStatus.CANCELLED.value,
    RunStatus.INTERRUPTED.value,
)
US = 1_000_000


@dataclass(slots=True)
class RecoveryPlan:
    agent_id: str
    agent_status: str
    last_good_state_version: int
    last_failure: TaskRunRecord | None
    failed_task_runs: list[TaskRunRecord]
    checkpoint: CheckpointRecord | None
    plan: planner.Plan
    failed_task_runs_truncated: bool = False


@dataclass(slots=True)
class RetryResult:
    run: RunRecord
    carried_over: list[TaskRunRecord] = field(default_factory=list)
    pending_task_ids: list[str] = field(default_factory=list)
    carried_over_truncated: bool = False
    pending_task_ids_truncated: bool = False


@dataclass(slots=True)
class _Facts:
    agent_status: str
    state_version: int
    state_readable: bool
    last_good: int
    last_failure: TaskRunRecord | None
    open_failures: list[TaskRunRecord]
    agent_error: tuple[int, str] | None
    candidates: list[CheckpointRecord]


def _data(**fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def _parses(document: bytes) -> bool:
    try:
        json.loads(document)
    except ValueError:
        return False
    return True


def policy_from(settings: Settings) -> planner.Policy:
    return planner.Policy(
        timeout_factor=settings.retry_timeout_factor,
        timeout_cap_us=int(settings.retry_timeout_cap * US),
        backoff_base_us=int(settings.retry_backoff_base * US),
        backoff_cap_us=int(settings.retry_backoff_cap * US),
    )


def _run_missing(run_id: str) -> NotFound:
    return NotFound(f"workflow run {run_id!r} does not exist")


class RecoveryService:
    def __init__(
        self,
        db: Database,
        checkpoints: CheckpointService,
        policy: planner.Policy,
        rand: Callable[[], float] = random.random,
        *,
        answer_bytes: int = 8 << 20,
    ) -> None:
        self.db = db
        self.checkpoints = checkpoints
        self.policy = policy
        self.rand = rand
        self.answer_bytes = answer_bytes  # the record bytes one response may carry

    # -- recovery plans ---------------------------------------------------------------
    async def plan(self, namespace: str, agent_id: str) -> RecoveryPlan:
        v = Violations()
        check.check_id(v, "agent_id", agent_id)
        v.raise_if_any()
        facts = await self.db.read(lambda conn: self._facts(conn, namespace, agent_id))
        if facts is None:
            raise NotFound(f"agent {agent_id!r} does not exist")
        checkpoint = None
        for candidate in facts.candidates:
            if await self.checkpoints.verifies(candidate):
                checkpoint = candidate
                break
        failure = None
        if facts.open_failures:
            task = facts.open_failures[0]
            failure = planner.Failure(
                kind=task.error.kind if task.error else 0,
                message=task.error.message if task.error else "",
                task_status=task.status,
                attempt=task.attempt,
                timeout_us=task.timeout_us,
                heartbeat_timeout_us=task.heartbeat_timeout_us,
                task_run_id=task.task_run_id,
            )
        elif facts.agent_status == "ERROR" and facts.agent_error is not None:
            failure = planner.Failure(kind=facts.agent_error[0], message=facts.agent_error[1])
        chosen = planner.plan(
            planner.Facts(
                agent_id=agent_id,
                agent_status=facts.agent_status,
                state_version=facts.state_version,
                state_readable=facts.state_readable,
                checkpoint_id=checkpoint.checkpoint_id if checkpoint else None,
                checkpoint_state_version=checkpoint.state_version if checkpoint else 0,
                failure=failure,
            ),
            self.policy,
            self.rand,
        )
        budget = self.answer_bytes - len(chosen.explanation.encode())
        if facts.last_failure is not None:
            budget -= weights.task_run(facts.last_failure)
        if checkpoint is not None:
            budget -= weights.manifest(checkpoint)
        if budget < 0:  # only under a max_message_bytes smaller than the largest records
            raise ResourceExhausted(
                f"the recovery plan of agent {agent_id!r} would be about "
                f"{self.answer_bytes - budget} bytes with its last failure and checkpoint, "
                f"more than one response can carry ({self.answer_bytes} bytes); raise "
                "max_message_bytes, or read them with GetTaskRun and GetCheckpoint"
            )
        listed, _ = weights.trim(
            facts.open_failures[:MAX_FAILED_TASK_RUNS], weights.task_run, budget
        )
        return RecoveryPlan(
            agent_id,
            facts.agent_status,
            facts.last_good,
            facts.last_failure,
            listed,
            checkpoint,
            chosen,
            failed_task_runs_truncated=len(listed) < len(facts.open_failures),
        )

    @staticmethod
    def _facts(conn: Connection, namespace: str, agent_id: str) -> _Facts | None:
        agent = agent_rows.get(conn, namespace, agent_id)
        if agent is None:
            return None
        live = agent.state_version
        readable, last_good = True, 0
        if live:
            record = state_rows.get_version(conn, namespace, agent_id, live)
            readable = record is not None and _parses(record.document)
            if readable:
                last_good = live
            else:
                for older in state_rows.list_versions(
                    conn, namespace, agent_id, before=live, limit=50, with_documents=True
                ):
                    if _parses(older.document):
                        last_good = older.version
                        break
        candidates = [
            candidate
            for candidate in checkpoint_rows.newest(conn, namespace, agent_id, VERIFY_CANDIDATES)
            # A checkpoint whose pinned state is gone cannot be restored.
            if candidate.state_version == 0
            or state_rows.get_version(conn, namespace, agent_id, candidate.state_version)
            is not None
        ]
        error = agent.error
        return _Facts(
            agent_status=agent.status,
            state_version=live,
            state_readable=readable,
            last_good=last_good,
            last_failure=recovery_rows.newest_failure(conn, namespace, agent_id),
            # One more than a plan lists tells that there were more.
            open_failures=recovery_rows.open_failures(
                conn, namespace, agent_id, limit=MAX_FAILED_TASK_RUNS + 1
            ),
            agent_error=(error.kind, error.message) if error is not None else None,
            candidates=candidates,
        )

    # -- partial re-runs ----------------------------------------------------------------
    async def retry_run(
        self, namespace: str, run_id: str, replay: Replay | None = None
    ) -> RetryResult | Stored:
        v = Violations()
        check.check_id(v, "run_id", run_id)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()

        def write(ctx: WriteContext) -> RetryResult:
            event = ctx.emit(namespace, "run.retried", b"{}")  # counter lock first
            old = run_rows.get_run(ctx.conn, namespace, run_id, for_update=True)
            if old is None:
                raise _run_missing(run_id)
            require_live_lease(old, ctx.now)
            _require_retryable(ctx.conn, old)
            result = _start_attempt(ctx, old)
            new = result.run
            event.agent_id, event.run_id = new.agent_id, new.run_id
            event.data = _retried_data(old, result)
            return self._fitted(result)

        try:
            return await self.db.write(guarded(namespace, replay, write))
        except RunLeaseExpired:
            # Abandoned but not yet swept: interrupt it now, then retry it as asked.
            await interrupt_now(self.db, namespace, run_id)
        return await self.db.write(guarded(namespace, replay, write))

    def _fitted(self, result: RetryResult) -> RetryResult:
        """The answer cut to one response: the pending task ids first (what is left to do),
        then the carried-over task runs, each list as far as it fits."""
        budget = self.answer_bytes - weights.run(result.run)
        pending, budget = weights.trim(result.pending_task_ids, paging.text_bytes, budget)
        carried, _ = weights.trim(result.carried_over, weights.task_run, budget)
        return RetryResult(
            result.run,
            carried,
            pending,
            carried_over_truncated=len(carried) < len(result.carried_over),
            pending_task_ids_truncated=len(pending) < len(result.pending_task_ids),
        )

    # -- compensation ------------------------------------------------------------------------
    async def compensation_plan(
        self, namespace: str, run_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[TaskRunRecord], str]:
        """A page of the compensation plan and the token of the next (empty at the end).

        ``page_size`` 0 is the call as it was before paging: every (remaining) step, or
        RESOURCE_EXHAUSTED when they would not fit in one response. A client that does not
        know about pages then never takes part of a plan for all of it."""
        v = Violations()
        check.check_id(v, "run_id", run_id)
        size = check.check_page_size(v, page_size) if page_size else None
        v.raise_if_any()
        digest = paging.filter_digest(namespace, "compensations", run_id)
        cursor = paging.decode(page_token, digest, (int, int))
        after = (cursor[0], cursor[1]) if cursor else None

        def read(conn: Connection) -> list[TaskRunRecord]:
            run = run_rows.get_run(conn, namespace, run_id)
            if run is None:
                raise _run_missing(run_id)
            _require_compensable(run)
            return recovery_rows.compensations(
                conn,
                namespace,
                run_id,
                after=after,
                limit=size + 1 if size else EVERY_STEP,
                budget=self.answer_bytes,
            )

        steps = await self.db.read(read)
        if size is None:
            if getattr(steps, "cut", False) or (
                sum(map(weights.compensation_step, steps)) > self.answer_bytes
            ):
                raise ResourceExhausted(
                    f"the compensation plan of run {run_id!r} holds more than one response "
                    f"can carry ({self.answer_bytes} bytes); ask for pages with page_size "
                    "(1 to 1000)"
                )
            return steps, ""
        return paging.page_of(
            steps,
            size,
            weights.compensation_step,
            self.answer_bytes,
            digest,
            lambda r: [r.ended_at or 0, r.seq],
        )

    async def complete_compensation(
        self, namespace: str, run_id: str, task_run_id: str, replay: Replay | None = None
    ) -> TaskRunRecord | Stored:
        v = Violations()
        check.check_id(v, "run_id", run_id)
        check.check_id(v, "task_run_id", task_run_id)
        check.check_request_id(v, replay.request_id if replay else "")
        v.raise_if_any()

        def write(ctx: WriteContext) -> TaskRunRecord:
            run = run_rows.get_run(ctx.conn, namespace, run_id)
            if run is None:
                raise _run_missing(run_id)
            _require_compensable(run)
            task = run_rows.get_task(ctx.conn, namespace, task_run_id)
            if task is None or task.run_id != run_id:
                raise NotFound(f"workflow run {run_id!r} has no task run {task_run_id!r}")
            if task.status != TaskStatus.COMPLETED.value or task.compensation is None:
                raise FailedPrecondition(
                    f"task run {task_run_id!r} is {task.status} and recorded no compensation; "
                    "only completed task runs with a compensation can be compensated",
                    reason="NO_COMPENSATION",
                    subject=f"task-runs/{task_run_id}",
                    metadata={"current_status": task.status},
                )
            if task.compensation_done_at is not None:
                return task  # already done: the same answer, no second event
            # The event (and its counter lock) before the row lock, the order every write
            # follows so replicas cannot deadlock.
            ctx.emit(
                namespace,
                "task.compensated",
                _data(task_id=task.task_id, attempt=task.attempt),
                agent_id=task.agent_id,
                run_id=run_id,
                task_run_id=task_run_id,
            )
            if not recovery_rows.mark_compensated(ctx.conn, task, ctx.now):
                raise Conflict(
                    f"task run {task_run_id!r} was marked compensated concurrently; retry",
                    reason="CONCURRENT_UPDATE",
                )
            return task

        return await self.db.write(guarded(namespace, replay, write))


def _retried_data(old: RunRecord, result: RetryResult) -> bytes:
    """The run.retried event's data: the task id lists are cut to keep the event within
    the event data limit (a subscriber must be able to receive it); the counts are whole."""
    new = result.run
    budget = EVENT_LIST_BYTES
    carried = [task.task_id for task in result.carried_over]
    listed_carried, budget = weights.trim(carried, _json_bytes, budget)
    listed_pending, _ = weights.trim(result.pending_task_ids, _json_bytes, budget)
    return _data(
        retry_of_run_id=old.run_id,
        root_run_id=new.root_run_id,
        attempt=new.attempt,
        carried_over=listed_carried,
        pending_task_ids=listed_pending,
        carried_over_count=len(carried),
        pending_task_count=len(result.pending_task_ids),
    )


def _json_bytes(text: str) -> int:
    """A string's bytes as an element of a JSON array (quotes, escapes, comma)."""
    return len(json.dumps(text, ensure_ascii=False).encode()) + 1


def _require_retryable(conn: Connection, old: RunRecord) -> None:
    if old.status not in RETRYABLE_RUNS:
        raise FailedPrecondition(
            f"workflow run {old.run_id!r} is {old.status}; only FAILED or INTERRUPTED runs "
            "can be retried",
            reason="INVALID_RUN_STATUS",
            subject=f"runs/{old.run_id}",
            metadata={"current_status": old.status, "allowed_statuses": ",".join(RETRYABLE_RUNS)},
        )
    newest = recovery_rows.latest_attempt(conn, old.namespace, old.root_run_id)
    if newest is not None and newest.attempt > old.attempt:
        raise FailedPrecondition(
            f"workflow run {old.run_id!r} was already retried by {newest.run_id!r} "
            f"(attempt {newest.attempt}); retry the newest attempt instead",
            reason="ALREADY_RETRIED",
            subject=f"runs/{old.run_id}",
            metadata={"retry_run_id": newest.run_id, "retry_attempt": str(newest.attempt)},
        )
    if old.agent_id:
        agent = agent_rows.get(conn, old.namespace, old.agent_id)
        if agent is None or agent.status == "TERMINATED":
            state = "was deleted" if agent is None else "is TERMINATED"
            raise FailedPrecondition(
                f"workflow run {old.run_id!r} belongs to agent {old.agent_id!r}, which {state}; "
                "a new attempt cannot run for it",
                reason="AGENT_NOT_LIVE",
                subject=f"agents/{old.agent_id}",
            )


def _start_attempt(ctx: WriteContext, old: RunRecord) -> RetryResult:
    conn, namespace = ctx.conn, old.namespace
    new_id = new_run_id(ctx.now)
    run = RunRecord(
        namespace=namespace,
        run_id=new_id,
        workflow_name=old.workflow_name,
        agent_id=old.agent_id,
        status=RunStatus.RUNNING.value,
        input=old.input,
        labels=dict(old.labels),
        attempt=old.attempt + 1,
        root_run_id=old.root_run_id,
        created_at=ctx.now,
        updated_at=ctx.now,
        started_at=ctx.now,
        retry_of_run_id=old.run_id,
        heartbeat_timeout_us=old.heartbeat_timeout_us,
        lease_expires_at=run_lease_expiry(ctx.now, old.heartbeat_timeout_us),
    )
    run_rows.insert_run(conn, run)
    # The newest completed attempt of each task in the failed run carries over.
    completed: dict[str, TaskRunRecord] = {}
    for task in recovery_rows.run_tasks(conn, namespace, old.run_id):
        if task.status == TaskStatus.COMPLETED.value:
            completed[task.task_id] = task
    result = RetryResult(run)
    for task in sorted(completed.values(), key=lambda t: t.seq):
        copy_id = new_task_run_id(ctx.now)
        origin = task.carried_from or task.task_run_id
        event = ctx.emit(
            namespace,
            "task.carried_over",
            _data(task_id=task.task_id, carried_from_task_run_id=origin),
            agent_id=task.agent_id,
            run_id=new_id,
            task_run_id=copy_id,
        )
        copy = TaskRunRecord(
            namespace=namespace,
            task_run_id=copy_id,
            run_id=new_id,
            task_id=task.task_id,
            agent_id=task.agent_id,
            attempt=task.attempt,
            status=TaskStatus.COMPLETED.value,
            input=task.input,
            started_at=task.started_at,
            seq=event.sequence,
            timeout_us=task.timeout_us,
            heartbeat_timeout_us=task.heartbeat_timeout_us,
            ended_at=task.ended_at,
            result=task.result,
            progress=task.progress,
            compensation=task.compensation,
            carried_from=origin,
        )
        run_rows.insert_task(conn, copy)
        result.carried_over.append(copy)
    # Everything the chain has seen and not completed is still to do, in first-seen order.
    seen: dict[str, None] = {}
    for task in recovery_rows.chain_tasks(conn, namespace, old.root_run_id):
        seen.setdefault(task.task_id, None)
    result.pending_task_ids = [task_id for task_id in seen if task_id not in completed]
    return result


def _require_compensable(run: RunRecord) -> None:
    if run.status not in COMPENSABLE_RUNS:
        raise FailedPrecondition(
            f"workflow run {run.run_id!r} is {run.status}; compensation applies to FAILED, "
            "CANCELLED or INTERRUPTED runs",
            reason="INVALID_RUN_STATUS",
            subject=f"runs/{run.run_id}",
            metadata={
                "current_status": run.status,
                "allowed_statuses": ",".join(COMPENSABLE_RUNS),
            },
        )
