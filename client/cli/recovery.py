"""``stateward recover``, ``stateward gc`` and ``stateward archive ...``: getting agents
back, and keeping storage from growing forever."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from ..models import ArchivedRuns, CollectedGarbage, RecoveryPlan, TaskRun
from . import _format
from ._args import command, duration, timestamp
from ._context import OK, USAGE, Context
from .runs import error_text

ARCHIVE_READER = "stateward.storage.archive"
INSTALL_HINT = "reading archives needs the server's packages: pip install 'stateward[server]'"
FAILED_COLUMNS = ("TASK RUN", "TASK", "RUN", "STATUS", "ENDED", "ERROR")


def register(commands: Any) -> None:
    p = command(commands, "recover", "show a recovery plan for an agent (read-only)", _recover)
    p.add_argument("agent_id", metavar="AGENT_ID")

    p = command(commands, "gc", "delete stored payloads no checkpoint references", _gc)
    p.add_argument(
        "--grace-period",
        type=duration,
        metavar="AGE",
        help="only payloads older than AGE, e.g. 1h (default: the server's setting)",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would go; delete nothing")

    group = commands.add_parser(
        "archive",
        help="archive finished runs, read archives back",
        description="Move finished runs to compressed JSON Lines archives; read them back.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = command(
        actions, "create", "archive finished runs (then delete them from the database)", _create
    )
    cutoff = p.add_mutually_exclusive_group(required=True)
    cutoff.add_argument(
        "--older-than", type=duration, metavar="AGE", help="runs that ended more than AGE ago"
    )
    cutoff.add_argument(
        "--ended-before", type=timestamp, metavar="TIME", help="runs that ended before TIME"
    )
    p.add_argument(
        "--url",
        default="",
        help="fsspec URL of the archive file, ending .jsonl.gz or .jsonl.zst "
        "(default: the server's archive location)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would be archived")

    p = command(actions, "show", "print the runs, task runs and events in an archive", _show)
    p.add_argument("url", metavar="URL", help="the archive: file://, s3:// or memory:// URL")


# -- handlers -----------------------------------------------------------------------


def _recover(ctx: Context) -> int:
    ctx.emit(ctx.client().recover_agent(ctx.args.agent_id), show_plan)
    return OK


def _gc(ctx: Context) -> int:
    a = ctx.args
    collected = ctx.client().collect_garbage(a.grace_period, a.dry_run)
    ctx.emit(collected, lambda c: show_collected(c, a.dry_run))
    return OK


def _create(ctx: Context) -> int:
    a = ctx.args
    ended_before = a.ended_before or datetime.now(UTC) - a.older_than
    archived = ctx.client().archive_runs(ended_before, a.url, a.dry_run)
    ctx.emit(archived, lambda r: show_archived(r, a.dry_run))
    return OK


def _show(ctx: Context) -> int:
    # The reader lives with the server (it needs fsspec and zstandard); the client
    # installs without them, so it is imported only here.
    try:
        reader = importlib.import_module(ARCHIVE_READER)
    except ImportError as exc:
        ctx.note(f"error: {INSTALL_HINT} ({exc})")
        return USAGE
    try:
        records: Iterator[dict[str, Any]] = reader.read_archive(ctx.args.url)
        for record in records:
            text = _format.to_json_line(record) if ctx.args.json else show_record(record)
            print(text, file=ctx.stdout)
    except (reader.ArchiveError, OSError, ValueError) as exc:
        ctx.note(f"error: cannot read {ctx.args.url}: {exc}")
        return USAGE
    return OK


# -- rendering ----------------------------------------------------------------------


def show_plan(plan: RecoveryPlan) -> str:
    checkpoint = plan.checkpoint
    view = _format.details(
        [
            ("agent", f"{plan.agent_id} ({plan.agent_status})"),
            ("strategy", plan.strategy),
            ("why", plan.explanation or None),
            ("suggested timeout", plan.suggested_timeout),
            ("retry after", plan.retry_delay),
            (
                "last good state",
                f"version {plan.last_good_state_version}"
                if plan.last_good_state_version
                else "none",
            ),
            (
                "checkpoint",
                (
                    f"{checkpoint.checkpoint_id} (state version {checkpoint.state_version}, "
                    f"{_format.human_bytes(checkpoint.size_bytes)}, "
                    f"{_format.cell(checkpoint.create_time)})"
                )
                if checkpoint
                else "none",
            ),
            ("last failure", _failure(plan.last_failure) if plan.last_failure else "none"),
        ]
    )
    if not plan.failed_task_runs:
        return view
    table = _format.table(
        FAILED_COLUMNS,
        [
            (t.task_run_id, t.task_id, t.run_id, t.status, t.end_time, error_text(t.error) or "-")
            for t in plan.failed_task_runs
        ],
    )
    more = (
        "\n(a plan lists only the newest; `stateward runs show RUN` lists a run's task runs)"
        if plan.failed_task_runs_truncated
        else ""
    )
    return f"{view}\n\ntask runs still to recover:\n{table}{more}"


def _failure(task: TaskRun) -> str:
    error = error_text(task.error)
    return f"task {task.task_id!r} ({task.task_run_id}) {task.status}" + (
        f": {error}" if error else ""
    )


def show_collected(collected: CollectedGarbage, dry_run: bool) -> str:
    verb = "would delete" if dry_run else "deleted"
    count = collected.deleted_count
    lines = [f"  {key}" for key in collected.deleted_blobs]
    if collected.deleted_truncated:
        lines.append(f"  ... and {count - len(collected.deleted_blobs)} more")
    lines.append(
        f"{verb} {count} orphan blob{'s' if count != 1 else ''} "
        f"({_format.human_bytes(collected.freed_bytes)})"
    )
    return "\n".join(lines)


def show_archived(archived: ArchivedRuns, dry_run: bool) -> str:
    counts = f"{archived.runs} runs, {archived.task_runs} task runs, {archived.events} events"
    if dry_run:
        return f"would archive {counts}" + (
            f" to {archived.archive_url}" if archived.archive_url else ""
        )
    if not archived.runs:
        return "no finished runs to archive"
    return f"archived {counts} to {archived.archive_url}"


def show_record(record: dict[str, Any]) -> str:
    """One archive record as a line for people."""
    kind = record.get("kind")
    if kind == "header":
        return (
            f"archive {record.get('format')} of namespace {record.get('namespace')!r}: "
            f"runs that ended before {_micros(record.get('ended_before'))}, "
            f"written {_micros(record.get('created_at'))}"
        )
    if kind == "run":
        return "  ".join(
            [
                f"run {record.get('run_id')}",
                str(record.get("workflow_name")),
                str(record.get("status")),
                f"agent={record.get('agent_id') or '-'}",
                f"attempt={record.get('attempt')}",
                f"started {_micros(record.get('started_at'))}",
                f"ended {_micros(record.get('ended_at'))}",
            ]
        ) + _error_suffix(record)
    if kind == "task_run":
        return "  ".join(
            [
                f"  task {record.get('task_run_id')}",
                str(record.get("task_id")),
                str(record.get("status")),
                f"attempt={record.get('attempt')}",
                f"ended {_micros(record.get('ended_at'))}",
            ]
        ) + _error_suffix(record)
    if kind == "event":
        data = record.get("data") or ""
        return f"    #{record.get('sequence')}  {_micros(record.get('created_at'))}  " + (
            f"{record.get('type')}  {data}" if data and data != "{}" else str(record.get("type"))
        )
    if kind == "trailer":
        return (
            f"{record.get('runs')} runs, {record.get('task_runs')} task runs, "
            f"{record.get('events')} events"
        )
    return _format.to_json_line(record)


def _error_suffix(record: dict[str, Any]) -> str:
    message = record.get("error_message")
    return f"  error: {message}" if message else ""


def _micros(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    return _format.time(datetime.fromtimestamp(value / 1_000_000, UTC))
