"""``stateward agents ...``: create, inspect and move agents through their lifecycle."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from .. import Agent, Client, Transition
from .._operation import UNSET
from ..errors import UsageError
from ..models import AgentStatus, ErrorKind
from . import _format
from ._args import choice, command, json_object, label, positive_int
from ._context import OK, Context

COLUMNS = ("ID", "TYPE", "STATUS", "STATE VERSION", "UPDATED")
HISTORY_COLUMNS = ("ID", "FROM", "TO", "REASON", "TIME")

# Lifecycle moves: command -> (client method, target status, help).
MOVES: dict[str, tuple[Callable[[Client], Callable[..., Agent]], AgentStatus, str]] = {
    "init": (lambda c: c.initialize_agent, AgentStatus.INITIALIZED, "CREATED -> INITIALIZED"),
    "activate": (lambda c: c.activate_agent, AgentStatus.ACTIVE, "INITIALIZED -> ACTIVE"),
    "pause": (lambda c: c.pause_agent, AgentStatus.PAUSED, "ACTIVE -> PAUSED"),
    "resume": (lambda c: c.resume_agent, AgentStatus.ACTIVE, "PAUSED -> ACTIVE"),
    "terminate": (lambda c: c.terminate_agent, AgentStatus.TERMINATED, "any -> TERMINATED"),
    "reset": (lambda c: c.reset_agent, AgentStatus.INITIALIZED, "ERROR -> INITIALIZED"),
}


def register(commands: Any) -> None:
    group = commands.add_parser(
        "agents",
        help="create, inspect and move agents",
        description="Create, inspect and move agents through their lifecycle.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = command(actions, "create", "create an agent (status CREATED)", _create)
    p.add_argument("agent_id", metavar="ID")
    p.add_argument("--type", required=True, help="agent type")
    _config_option(p)
    _label_option(p, "label the agent (repeatable)")
    _request_id_option(p)

    p = command(actions, "get", "show one agent in detail", _get)
    p.add_argument("agent_id", metavar="ID")

    p = command(actions, "list", "list agents", _list)
    p.add_argument("--status", type=choice(list(AgentStatus)), help="only agents in this status")
    p.add_argument("--type", help="only agents of this type")
    _label_option(p, "only agents with this label (repeatable; all must match)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="show at most N agents")

    p = command(actions, "update", "replace an agent's config and/or labels", _update)
    p.add_argument("agent_id", metavar="ID")
    _config_option(p)
    _label_option(p, "new labels, replacing all current ones (repeatable)")
    p.add_argument("--etag", help="only if the agent still has this etag (from 'get')")
    _request_id_option(p)

    for name, (_, target, summary) in MOVES.items():
        p = command(actions, name, summary, _move, target_status=target, move=name)
        p.add_argument("agent_id", metavar="ID")
        p.add_argument("--reason", default="", help="why, kept in the audit trail")
        _request_id_option(p)

    p = command(actions, "error", "record a failure: any non-terminal -> ERROR", _error)
    p.add_argument("agent_id", metavar="ID")
    p.add_argument("--message", required=True, help="what went wrong")
    p.add_argument(
        "--kind",
        type=choice(list(ErrorKind)),
        default="UNKNOWN",
        help=f"one of {', '.join(ErrorKind)} (default %(default)s)",
    )
    p.add_argument(
        "--details",
        type=json_object,
        metavar="JSON|@FILE",
        help="structured details, a JSON object",
    )
    p.set_defaults(target_status=AgentStatus.ERROR)
    _request_id_option(p)

    p = command(actions, "delete", "delete a TERMINATED agent and all its records", _delete)
    p.add_argument("agent_id", metavar="ID")
    _request_id_option(p)

    p = command(actions, "history", "list an agent's lifecycle transitions", _history)
    p.add_argument("agent_id", metavar="ID")
    p.add_argument("--limit", type=positive_int, metavar="N", help="show at most N transitions")


def _config_option(p: Any) -> None:
    p.add_argument(
        "--config",
        type=json_object,
        metavar="JSON|@FILE",
        help="configuration: a JSON object, @file.json, or @- for stdin",
    )


def _label_option(p: Any, summary: str) -> None:
    p.add_argument("--label", type=label, action="append", metavar="KEY=VALUE", help=summary)


def _request_id_option(p: Any) -> None:
    p.add_argument("--request-id", help="idempotency key: repeating it repeats nothing")


# -- handlers -----------------------------------------------------------------------


def _create(ctx: Context) -> int:
    a = ctx.args
    agent = ctx.client().create_agent(
        a.agent_id, a.type, a.config, dict(a.label or ()), request_id=a.request_id
    )
    ctx.emit(agent, show_agents)
    return OK


def _get(ctx: Context) -> int:
    ctx.emit(ctx.client().get_agent(ctx.args.agent_id), show_agent)
    return OK


def _list(ctx: Context) -> int:
    a = ctx.args
    found = ctx.client().iter_agents(
        status=a.status, type=a.type, labels=dict(a.label or ()), page_size=min(a.limit or 0, 1000)
    )
    agents = list(itertools.islice(found, a.limit))
    ctx.emit(agents, lambda items: show_agents(items) if items else "no agents found")
    return OK


def _update(ctx: Context) -> int:
    a = ctx.args
    if a.config is None and a.label is None:
        raise UsageError("nothing to update: give --config and/or --label")
    agent = ctx.client().update_agent(
        a.agent_id,
        config=UNSET if a.config is None else a.config,
        labels=UNSET if a.label is None else dict(a.label),
        etag=a.etag,
        request_id=a.request_id,
    )
    ctx.emit(agent, show_agents)
    return OK


def _move(ctx: Context) -> int:
    a = ctx.args
    method = MOVES[a.move][0](ctx.client())
    ctx.emit(method(a.agent_id, a.reason, a.request_id), show_agents)
    return OK


def _error(ctx: Context) -> int:
    a = ctx.args
    agent = ctx.client().report_error(
        a.agent_id, a.message, a.kind, a.details, request_id=a.request_id
    )
    ctx.emit(agent, show_agents)
    return OK


def _delete(ctx: Context) -> int:
    a = ctx.args
    ctx.client().delete_agent(a.agent_id, request_id=a.request_id)
    ctx.say(f"deleted agent {a.agent_id!r}", {"agent_id": a.agent_id, "deleted": True})
    return OK


def _history(ctx: Context) -> int:
    a = ctx.args
    found = ctx.client().iter_transitions(a.agent_id, page_size=min(a.limit or 0, 1000))
    transitions = list(itertools.islice(found, a.limit))
    ctx.emit(transitions, show_transitions)
    return OK


# -- rendering ----------------------------------------------------------------------


def show_agents(agents: Agent | Iterable[Agent]) -> str:
    rows = [agents] if isinstance(agents, Agent) else agents
    return _format.table(
        COLUMNS, [(a.agent_id, a.type, a.status, a.state_version, a.update_time) for a in rows]
    )


def show_agent(agent: Agent) -> str:
    error = agent.last_error
    return _format.details(
        [
            ("id", agent.agent_id),
            ("type", agent.type),
            ("status", agent.status),
            ("state version", agent.state_version),
            ("etag", agent.etag),
            ("labels", ", ".join(f"{k}={v}" for k, v in sorted(agent.labels.items())) or "-"),
            ("config", _format.compact_json(agent.config)),
            ("last error", f"{error.kind}: {error.message}" if error else None),
            ("created", agent.create_time),
            ("initialized", agent.initialize_time),
            ("activated", agent.activate_time),
            ("paused", agent.pause_time),
            ("terminated", agent.terminate_time),
            ("updated", agent.update_time),
        ]
    )


def show_transitions(transitions: list[Transition]) -> str:
    if not transitions:
        return "no transitions"
    return _format.table(
        HISTORY_COLUMNS,
        [
            (t.transition_id, t.from_status, t.to_status, t.reason or "-", t.create_time)
            for t in transitions
        ],
    )
