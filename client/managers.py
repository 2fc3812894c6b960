"""The course lesson's four manager classes, backed by a Stateward server.

The lesson "Agent Lifecycle and State Management" teaches ``LifecycleManager``,
``StateManager``, ``ExecutionTracker`` and ``RecoveryManager`` as in-memory
sketches. These classes keep their method names, arguments and return
conventions, so lesson code runs unchanged against durable storage::

    from stateward.client import Client
    from stateward.client.managers import (
        ExecutionTracker, LifecycleManager, RecoveryManager, StateManager,
    )

    client = Client.connect("127.0.0.1:50051")
    lifecycle = LifecycleManager(client)
    lifecycle.create_agent("a1", "planner", {"model": "m"})
    lifecycle.initialize_agent("a1")          # True
    states = StateManager(client)
    states.save_agent_state("a1", {"step": 1})
    recovery = RecoveryManager(states, ExecutionTracker(client))
    recovery.recover_agent("a1")              # {"status": "recovered", ...}

Each constructor takes a ``Client`` (shared, left open) or a target string
(the manager connects and owns the client: close it with ``close()`` or a
``with`` block). The server's rules win where the lesson's sketch is looser
(any state may be re-initialized there, ids are ints, ...); every difference
is listed in docs/notes/ecosystem.md.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from types import TracebackType
from typing import Any, Self

from .errors import FailedPrecondition, InvalidArgument, InvalidTransition, NotFound
from .models import Agent, AgentStatus, NewEvent, RecoveryStrategy, TaskRun
from .sync import Client

__all__ = [
    "AgentRecords",
    "AgentState",
    "ExecutionTracker",
    "LifecycleManager",
    "RecoveryManager",
    "StateManager",
]


class AgentState(Enum):
    """The lesson's lifecycle states (the server's ``AgentStatus``, in lower case)."""

    CREATED = "created"
    INITIALIZED = "initialized"
    ACTIVE = "active"
    PAUSED = "paused"
    TERMINATED = "terminated"
    ERROR = "error"

    @classmethod
    def from_status(cls, status: AgentStatus | str) -> AgentState:
        return cls(str(status).lower())


class _Manager:
    """Holds the client: a shared one, or one made from a target string and owned."""

    def __init__(self, client: Client | str) -> None:
        self._owns_client = isinstance(client, str)
        self.client: Client = Client.connect(client) if isinstance(client, str) else client

    def close(self) -> None:
        """Close the client if this manager opened it (from a target string)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- lifecycle ---------------------------------------------------------------------


def _record(agent: Agent) -> dict[str, Any]:
    """The lesson's agent record, read from the server."""
    return {
        "agent_id": agent.agent_id,
        "type": agent.type,
        "state": AgentState.from_status(agent.status),
        "config": agent.config,
        "created_at": agent.create_time,
        "initialized_at": agent.initialize_time,
        "terminated_at": agent.terminate_time,
    }


class AgentRecords(Mapping[str, dict[str, Any]]):
    """``LifecycleManager.agents``: the lesson's ``agent_id -> record`` dict, read live.

    Read-only: records change through the manager's methods only.
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getitem__(self, agent_id: str) -> dict[str, Any]:
        try:
            return _record(self._client.get_agent(agent_id))
        except (NotFound, InvalidArgument):
            raise KeyError(agent_id) from None

    def __contains__(self, agent_id: object) -> bool:
        if not isinstance(agent_id, str):
            return False
        try:
            self._client.get_agent(agent_id)
        except (NotFound, InvalidArgument):
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return (agent.agent_id for agent in self._client.iter_agents(page_size=1000))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class LifecycleManager(_Manager):
    """Creates agents and moves them through the server-enforced lifecycle.

    Moves return True when the agent reached the target state, False when the
    agent does not exist or the server refused the transition.
    """

    def __init__(self, client: Client | str) -> None:
        super().__init__(client)
        self.agents: Mapping[str, dict[str, Any]] = AgentRecords(self.client)
        """The lesson's ``agents`` dict, as a live read-only view of the server's records."""

    def create_agent(self, agent_id: str, agent_type: str, config: dict[str, Any]) -> str:
        """Create an agent in state ``created``; returns its id.

        Raises ``AlreadyExists`` for a taken id (the lesson overwrote silently).
        """
        self.client.create_agent(agent_id, agent_type, config=config)
        return agent_id

    def get_agent_state(self, agent_id: str) -> AgentState | None:
        """The agent's lifecycle state; None when it does not exist."""
        try:
            return AgentState.from_status(self.client.get_agent(agent_id).status)
        except (NotFound, InvalidArgument):
            return None

    def initialize_agent(self, agent_id: str) -> bool:
        """``created`` -> ``initialized``; from ``error`` this is the server's reset."""
        return self._move(agent_id, self.client.initialize_agent, fallback=("ERROR", "reset"))

    def activate_agent(self, agent_id: str) -> bool:
        """``initialized`` or ``paused`` -> ``active`` (activate, or the server's resume)."""
        return self._move(agent_id, self.client.activate_agent, fallback=("PAUSED", "resume"))

    def pause_agent(self, agent_id: str) -> bool:
        """``active`` -> ``paused``."""
        return self._move(agent_id, self.client.pause_agent)

    def terminate_agent(self, agent_id: str) -> bool:
        """Any state but ``terminated`` -> ``terminated`` (final)."""
        return self._move(agent_id, self.client.terminate_agent)

    def _move(self, agent_id: str, move: Any, fallback: tuple[str, str] | None = None) -> bool:
        """Try ``move``; when refused from ``fallback[0]``, try the server's move for it."""
        try:
            move(agent_id)
        except InvalidTransition as refused:
            if fallback is None or refused.current_status != fallback[0]:
                return False
            alternative = (
                self.client.reset_agent if fallback[1] == "reset" else self.client.resume_agent
            )
            try:
                alternative(agent_id)
            except (FailedPrecondition, NotFound):  # it changed meanwhile
                return False
        except (FailedPrecondition, NotFound, InvalidArgument):
            # Refused by another rule, unknown, or an id that cannot exist.
            return False
        return True


# -- state -------------------------------------------------------------------------


class StateManager(_Manager):
    """Saves and loads each agent's state document, with a cache that is never stale.

    The cache keeps the last document read or written per agent with its
    state version. ``load_agent_state`` asks the server for the agent's
    current version (a small ``GetAgent``) and serves the cached document
    only while that version is still the latest; otherwise it reads the
    document. A write by any other process is therefore seen at once.
    """

    def __init__(self, client: Client | str) -> None:
        super().__init__(client)
        self.cache: dict[str, _Cached] = {}
        """agent_id -> the last document seen, with its version."""

    def save_agent_state(self, agent_id: str, state: dict[str, Any]) -> None:
        """Write ``state`` as the agent's next state version.

        Raises ``NotFound`` for an unknown agent and ``FailedPrecondition`` for
        a terminated one (the lesson stored anything).
        """
        saved = self.client.save_state(agent_id, state)
        self.cache[agent_id] = _Cached(saved.version, saved.create_time, copy.deepcopy(state))

    def load_agent_state(self, agent_id: str) -> dict[str, Any] | None:
        """The agent's latest state; None when the agent is unknown or has no state."""
        try:
            agent = self.client.get_agent(agent_id)
        except (NotFound, InvalidArgument):
            self.cache.pop(agent_id, None)
            return None
        if agent.state_version == 0:
            self.cache.pop(agent_id, None)
            return None
        cached = self.cache.get(agent_id)
        if cached is not None and cached.matches(agent):
            return copy.deepcopy(cached.document)
        try:
            state = self.client.get_state(agent_id)
        except NotFound:  # cleared between the two reads
            self.cache.pop(agent_id, None)
            return None
        document = state.document or {}
        self.cache[agent_id] = _Cached(state.version, agent.create_time, document)
        return copy.deepcopy(document)

    def clear_agent_state(self, agent_id: str) -> None:
        """Remove the agent's state (a no-op for an unknown agent)."""
        self.cache.pop(agent_id, None)
        try:
            self.client.clear_state(agent_id)
        except (NotFound, InvalidArgument):
            pass


@dataclass(frozen=True, slots=True)
class _Cached:
    """A cached state document and how to tell it is still the latest."""

    version: int
    seen_at: datetime | None
    """A server time at which this agent (this incarnation of its id) held the version."""
    document: dict[str, Any]

    def matches(self, agent: Agent) -> bool:
        """Whether ``agent`` (freshly read) still points at this version. Version numbers
        restart when an id is deleted and created again, hence the creation time check."""
        if agent.state_version != self.version or self.seen_at is None:
            return False
        return agent.create_time is not None and agent.create_time <= self.seen_at


# -- execution ---------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _failure_message(result: Any) -> str:
    """What a failed execution's result says went wrong, for the server's planner."""
    if isinstance(result, Mapping):
        for key in ("error", "message", "reason"):
            if isinstance(result.get(key), str) and result[key]:
                return str(result[key])
    text = json.dumps(result, default=str) if result is not None else "failed"
    return text[:4096]


def _history_entry(task: TaskRun) -> dict[str, Any]:
    error = task.error
    return {
        "id": task.task_run_id,
        "task_id": task.task_id,
        "status": task.status.value.lower(),
        "started_at": _iso(task.start_time),
        "completed_at": _iso(task.end_time),
        "result": error.details if error is not None and task.result is None else task.result,
        "error": error.message if error is not None else None,
    }


class ExecutionTracker(_Manager):
    """Execution history as workflow runs and task runs.

    ``start_execution`` starts a workflow run named ``workflow_id`` for the
    agent and one task run ``task_id`` inside it; the task run id is the
    execution id. Completing the execution finishes both.

    The server times out a task run that shows no sign of life: by default
    after 300 s without a heartbeat. ``log_event`` is one (it also renews the
    lease); ``task_timeout`` (seconds or a timedelta) sets an overall limit
    instead, for executions that run long without logging.
    """

    def __init__(self, client: Client | str, *, task_timeout: timedelta | float | None = None):
        super().__init__(client)
        self.task_timeout = task_timeout

    def start_execution(self, workflow_id: str, agent_id: str, task_id: str) -> str:
        """Start tracking; returns the execution id (a task run id, a string).

        Raises ``NotFound`` for an unknown agent, ``FailedPrecondition`` for a
        terminated one.
        """
        run = self.client.start_workflow_run(workflow_id, agent_id=agent_id)
        try:
            task = self.client.start_task_run(
                run.run_id, task_id, agent_id, task_timeout=self.task_timeout
            )
        except BaseException:
            try:  # do not leave a RUNNING run behind
                self.client.cancel_workflow_run(run.run_id, reason="its task run did not start")
            except Exception:
                pass
            raise
        return task.task_run_id

    def log_event(self, execution_id: str, event_type: str, event_data: dict[str, Any]) -> None:
        """Append a run event (``step_started``, ``tool_call``...) to the execution.

        Raises ``NotFound`` for an unknown execution and ``InvalidArgument`` for
        a system event type (``task.completed``...).
        """
        self.client.append_events(
            [NewEvent(event_type, dict(event_data), task_run_id=execution_id)]
        )
        try:  # a logging execution is alive: keep its lease
            self.client.heartbeat(execution_id)
        except FailedPrecondition:
            pass  # already finished: the event is still recorded

    def complete_execution(
        self, execution_id: str, result: dict[str, Any], status: str = "completed"
    ) -> None:
        """Finish the execution: ``completed`` with ``result``, ``failed`` (``result``
        describes the error), or ``cancelled``. An unknown execution id is ignored.

        Raises ``FailedPrecondition`` when it has already finished.
        """
        outcome = status.lower()
        if outcome not in ("completed", "failed", "cancelled"):
            raise ValueError(
                f"status must be 'completed', 'failed' or 'cancelled' (got {status!r})"
            )
        try:
            task = self.client.get_task_run(execution_id)
        except (NotFound, InvalidArgument):
            return
        if outcome == "completed":
            self.client.complete_task_run(execution_id, result=result)
            self.client.complete_workflow_run(task.run_id, result=result)
        elif outcome == "failed":
            message = _failure_message(result)
            details = dict(result) if isinstance(result, Mapping) else None
            self.client.fail_task_run(execution_id, message, details=details)
            self.client.fail_workflow_run(task.run_id, message, details=details)
        else:  # a worker that stops after its run was cancelled ends CANCELLED
            self.client.cancel_workflow_run(task.run_id, reason="execution cancelled")
            self.client.fail_task_run(execution_id, "execution cancelled")

    def get_execution_history(self, agent_id: str) -> list[dict[str, Any]]:
        """The agent's executions, oldest first; [] for an unknown agent."""
        try:
            tasks = list(self.client.iter_task_runs(agent_id=agent_id, page_size=1000))
        except (NotFound, InvalidArgument):
            return []
        return [_history_entry(task) for task in tasks]


# -- recovery ----------------------------------------------------------------------


_RETRY_STRATEGIES = {
    RecoveryStrategy.RETRY_WITH_LONGER_TIMEOUT: "increase_timeout",
    RecoveryStrategy.RETRY_WITH_BACKOFF: "wait_and_retry",
}


class RecoveryManager:
    """Recovery plans and checkpoints, from the server's ``RecoverAgent`` and checkpoints."""

    def __init__(self, state_manager: StateManager, execution_tracker: ExecutionTracker) -> None:
        self.state_manager = state_manager
        self.execution_tracker = execution_tracker
        self.client = state_manager.client

    def recover_agent(self, agent_id: str) -> dict[str, Any]:
        """What to do for the agent, in the lesson's shapes.

        ``no_state`` when the agent is unknown or has no state; otherwise the
        server's plan: nothing wrong -> ``recovered`` with the state; a timeout
        -> ``retry``/``increase_timeout``; an exhausted resource ->
        ``retry``/``wait_and_retry``; anything else -> ``manual_intervention``
        with the error. An unreadable state the server can rebuild from a
        checkpoint gives ``{"status": "restore_checkpoint", "checkpoint_id":
        ..., "recovered": False}`` (the lesson had no such case).
        """
        try:
            plan = self.client.recover_agent(agent_id)
        except (NotFound, InvalidArgument):
            return {"status": "no_state", "recovered": False}
        if plan.strategy == RecoveryStrategy.RESTORE_CHECKPOINT and plan.checkpoint is not None:
            return {
                "status": "restore_checkpoint",
                "checkpoint_id": plan.checkpoint.checkpoint_id,
                "recovered": False,
            }
        state = self.state_manager.load_agent_state(agent_id)
        if not state:
            return {"status": "no_state", "recovered": False}
        if plan.strategy in _RETRY_STRATEGIES:
            return {
                "status": "retry",
                "strategy": _RETRY_STRATEGIES[plan.strategy],
                "recovered": True,
            }
        if plan.strategy == RecoveryStrategy.MANUAL_INTERVENTION:
            return {
                "status": "manual_intervention",
                "recovered": False,
                "error": self._error_of(plan),
            }
        return {"status": "recovered", "state": state, "recovered": True}

    def _error_of(self, plan: Any) -> str:
        failure = plan.last_failure
        if failure is not None and failure.error is not None:
            return str(failure.error.message)
        agent = self.client.get_agent(plan.agent_id)
        if agent.last_error is not None:
            return agent.last_error.message
        return str(plan.explanation or "unknown")

    def create_checkpoint(self, agent_id: str) -> str:
        """Snapshot the agent's current state; returns the checkpoint id.

        Raises ``NotFound`` for an unknown agent.
        """
        return self.client.create_checkpoint(agent_id).checkpoint_id

    def restore_from_checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        """Write the checkpoint's state back as the agent's latest state.

        ``checkpoint_not_found`` for an unknown id; ``checkpoint_without_state``
        when the agent had no state when the checkpoint was taken.
        """
        try:
            restored = self.client.restore_checkpoint(checkpoint_id)
        except (NotFound, InvalidArgument):
            return {"status": "checkpoint_not_found", "restored": False}
        except FailedPrecondition as refused:
            if refused.reason != "CHECKPOINT_WITHOUT_STATE":
                raise
            return {
                "status": "checkpoint_without_state",
                "checkpoint_id": checkpoint_id,
                "restored": False,
            }
        return {
            "status": "restored",
            "agent_id": restored.agent.agent_id,
            "checkpoint_id": checkpoint_id,
        }
