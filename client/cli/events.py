"""``stateward events ...``: query the event log, or follow it live."""

from __future__ import annotations

import itertools
import os
from typing import Any, TextIO

from .. import Event
from . import _format
from ._args import command, non_negative_int, positive_int, timestamp
from ._context import OK, Context

# ANSI styles, applied only when colour is on.
RESET = "\033[0m"
DIM = "\033[2m"
BOLD = "\033[1m"
RED = "\033[31m"
GREEN = "\033[32m"
YELLOW = "\033[33m"
BLUE = "\033[34m"
MAGENTA = "\033[35m"
CYAN = "\033[36m"

OUTCOMES = (
    ((".failed", ".timed_out", ".interrupted"), RED),
    ((".cancelled", ".deleted", ".cleared"), YELLOW),
    ((".completed", ".created", ".restored"), GREEN),
)
"""Colour by how the type ends (what happened) first..."""
FAMILIES = (
    ("agent.", BLUE),
    ("state.", MAGENTA),
    ("run.", CYAN),
    ("task.", CYAN),
    ("checkpoint.", YELLOW),
)
"""...then by what it is about; client run events are bold."""


def register(commands: Any) -> None:
    group = commands.add_parser(
        "events",
        help="query the event log or follow it live",
        description="Query the namespace's event log, or follow it live.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = command(actions, "list", "list matching events in sequence order", _list)
    _filters(p)
    p.add_argument(
        "--after", type=non_negative_int, default=0, metavar="SEQ", help="only after sequence SEQ"
    )
    p.add_argument("--since", type=timestamp, metavar="TIME", help="only events at or after TIME")
    p.add_argument("--until", type=timestamp, metavar="TIME", help="only events before TIME")
    p.add_argument("--limit", type=positive_int, metavar="N", help="show at most N events")

    p = command(actions, "tail", "follow matching events live (Ctrl-C to stop)", _tail)
    _filters(p)
    p.add_argument(
        "--after",
        type=non_negative_int,
        metavar="SEQ",
        help="start after sequence SEQ (0: the whole log); default: only new events",
    )
    p.add_argument("--count", type=positive_int, metavar="N", help="exit after N events")


def _filters(p: Any) -> None:
    p.add_argument("--agent", default="", metavar="AGENT_ID", help="only events of this agent")
    p.add_argument("--run", default="", metavar="RUN_ID", help="only events of this workflow run")
    p.add_argument(
        "--task-run", default="", metavar="TASK_RUN_ID", help="only events of this task run"
    )
    p.add_argument(
        "--type",
        action="append",
        default=[],
        dest="types",
        metavar="TYPE",
        help="only events of this type (repeatable)",
    )
    p.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the output (auto: when printing to a terminal)",
    )


def _list(ctx: Context) -> int:
    a = ctx.args
    found = ctx.client().iter_events(
        agent_id=a.agent,
        run_id=a.run,
        task_run_id=a.task_run,
        types=a.types,
        after_sequence=a.after,
        start_time=a.since,
        end_time=a.until,
        page_size=min(a.limit or 0, 1000),
    )
    events = list(itertools.islice(found, a.limit))
    color = use_color(a.color, ctx.stdout)
    ctx.emit(
        events,
        lambda items: "\n".join(line(e, color) for e in items) if items else "no events found",
    )
    return OK


def _tail(ctx: Context) -> int:
    a = ctx.args
    color = use_color(a.color, ctx.stdout)
    events = ctx.client().subscribe(
        agent_id=a.agent,
        run_id=a.run,
        task_run_id=a.task_run,
        types=a.types,
        after_sequence=a.after or 0,
        from_head=a.after is None,
    )
    try:
        for event in itertools.islice(events, a.count):
            if a.json:
                text = _format.to_json_line(event)
            else:
                text = line(event, color)
            print(text, file=ctx.stdout, flush=True)
    except KeyboardInterrupt:
        pass  # the way to stop following: not an error
    finally:
        events.close()
    return OK


# -- rendering ----------------------------------------------------------------------


def use_color(mode: str, stream: TextIO) -> bool:
    """``always``, ``never``, or (``auto``) when ``stream`` is a terminal and NO_COLOR
    is unset (https://no-color.org)."""
    if mode != "auto":
        return mode == "always"
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def type_color(kind: str) -> str:
    for endings, style in OUTCOMES:
        if kind.endswith(endings):
            return style
    for prefix, style in FAMILIES:
        if kind.startswith(prefix):
            return style
    return BOLD


def line(event: Event, color: bool = False) -> str:
    """One readable line: time, sequence, type, the ids it concerns, compact data.

    ``2026-11-26 07:02:53.330Z  #3  state.saved  agent=a1  {"version":1,"size":7}``
    """

    def paint(text: str, style: str) -> str:
        return f"{style}{text}{RESET}" if color else text

    when = _format.precise_time(event.create_time) if event.create_time else "-"
    parts = [paint(when, DIM), paint(f"#{event.sequence}", DIM)]
    parts.append(paint(event.type, type_color(event.type)))
    for name, value in (
        ("agent", event.agent_id),
        ("run", event.run_id),
        ("task", event.task_run_id),
    ):
        if value:
            parts.append(f"{paint(name + '=', DIM)}{value}")
    if event.data:
        parts.append(_format.compact_json(event.data))
    return "  ".join(parts)
