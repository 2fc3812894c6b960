"""``stateward runs ...``: workflow runs and the task runs inside them."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from .. import TaskRun, WorkflowRun
from ..models import ErrorDetail, RetriedRun, RunStatus
from . import _format
from ._args import choice, command, label, positive_int
from ._context import OK, Context

RUN_COLUMNS = ("RUN", "WORKFLOW", "AGENT", "STATUS", "ATTEMPT", "STARTED", "ENDED")
TASK_COLUMNS = ("TASK RUN", "TASK", "AGENT", "ATTEMPT", "STATUS", "STARTED", "ENDED", "ERROR")


def register(commands: Any) -> None:
    group = commands.add_parser(
        "runs",
        help="list and inspect workflow runs",
        description="List and inspect workflow runs and their task runs.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = command(actions, "list", "list workflow runs, newest first", _list)
    p.add_argument("--workflow", default="", help="only runs of this workflow")
    p.add_argument("--status", type=choice(list(RunStatus)), help="only runs in this status")
    p.add_argument("--agent", default="", metavar="AGENT_ID", help="only runs of this agent")
    p.add_argument(
        "--label",
        type=label,
        action="append",
        metavar="KEY=VALUE",
        help="only runs with this label (repeatable; all must match)",
    )
    p.add_argument(
        "--root", default="", metavar="RUN_ID", help="only the attempts of this original run"
    )
    p.add_argument("--limit", type=positive_int, metavar="N", help="show at most N runs")

    p = command(actions, "show", "show one run and its task runs", _show)
    p.add_argument("run_id", metavar="RUN_ID")

    p = command(
        actions,
        "retry",
        "start a new attempt of a FAILED or INTERRUPTED run (completed tasks carry over)",
        _retry,
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--request-id", help="idempotency key: repeating it repeats nothing")


def _list(ctx: Context) -> int:
    a = ctx.args
    found = ctx.client().iter_workflow_runs(
        workflow_name=a.workflow,
        status=a.status,
        labels=dict(a.label or ()),
        agent_id=a.agent,
        root_run_id=a.root,
        page_size=min(a.limit or 0, 1000),
    )
    runs = list(itertools.islice(found, a.limit))
    ctx.emit(runs, lambda items: show_runs(items) if items else "no runs found")
    return OK


def _show(ctx: Context) -> int:
    client = ctx.client()
    run = client.get_workflow_run(ctx.args.run_id)
    tasks = list(client.iter_task_runs(run_id=run.run_id, page_size=1000))
    ctx.emit({"run": run, "task_runs": tasks}, lambda _: show_run(run, tasks))
    return OK


def _retry(ctx: Context) -> int:
    a = ctx.args
    retried = ctx.client().retry_workflow_run(a.run_id, a.request_id)
    ctx.emit(retried, show_retried)
    return OK


# -- rendering ----------------------------------------------------------------------


def show_runs(runs: Iterable[WorkflowRun]) -> str:
    return _format.table(
        RUN_COLUMNS,
        [
            (
                r.run_id,
                r.workflow_name,
                r.agent_id or "-",
                r.status,
                r.attempt,
                r.start_time,
                r.end_time,
            )
            for r in runs
        ],
    )


def show_run(run: WorkflowRun, tasks: list[TaskRun]) -> str:
    view = _format.details(
        [
            ("run", run.run_id),
            ("workflow", run.workflow_name),
            ("agent", run.agent_id or None),
            ("status", run.status),
            ("attempt", run.attempt),
            ("retry of", run.retry_of_run_id or None),
            ("root run", run.root_run_id if run.root_run_id != run.run_id else None),
            ("labels", ", ".join(f"{k}={v}" for k, v in sorted(run.labels.items())) or None),
            ("input", _json_or_none(run.input)),
            ("result", _json_or_none(run.result)),
            ("error", error_text(run.error)),
            ("cancel requested", True if run.cancel_requested else None),
            ("started", run.start_time),
            ("ended", run.end_time),
            ("heartbeat timeout", run.heartbeat_timeout),
            ("last heartbeat", run.last_heartbeat_time),
            ("lease expires", run.lease_expire_time),
        ]
    )
    if not tasks:
        return view + "\n\nno task runs"
    return view + "\n\n" + show_task_runs(tasks)


def show_task_runs(tasks: Iterable[TaskRun]) -> str:
    return _format.table(
        TASK_COLUMNS,
        [
            (
                t.task_run_id,
                t.task_id,
                t.agent_id,
                t.attempt,
                t.status,
                t.start_time,
                t.end_time,
                error_text(t.error) or "-",
            )
            for t in tasks
        ],
    )


def show_retried(retried: RetriedRun) -> str:
    run = retried.run
    lines = [
        f"started attempt {run.attempt} of {run.workflow_name!r} as {run.run_id} "
        f"(retry of {run.retry_of_run_id})"
    ]
    carried = ", ".join(t.task_id for t in retried.carried_over) or "none"
    pending = ", ".join(retried.pending_task_ids) or "none"
    if retried.carried_over_truncated:
        carried += f", ... (`stateward runs show {run.run_id}` lists them all)"
    if retried.pending_task_ids_truncated:
        pending += ", ... (more than one answer holds)"
    lines.append(f"carried over: {carried}")
    lines.append(f"still to do:  {pending}")
    return "\n".join(lines)


def error_text(error: ErrorDetail | None) -> str | None:
    if error is None:
        return None
    return f"{error.kind}: {error.message}"


def _json_or_none(value: Any) -> str | None:
    return None if value is None else _format.compact_json(value)
