"""``stateward state ...``: read, write and migrate agents' versioned state documents."""

from __future__ import annotations

import itertools
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from .. import MigrationFailure, StateVersion
from ..errors import StatewardError, UsageError
from . import _format
from ._args import command, non_negative_int, positive_int, timestamp
from ._context import OK, REFUSED, Context
from ._progress import ProgressBar

INTERRUPTED = 130
HISTORY_COLUMNS = ("VERSION", "SCHEMA", "SIZE", "CREATED", "EVENT")


def register(commands: Any) -> None:
    group = commands.add_parser(
        "state",
        help="read and write agents' versioned state",
        description="Read and write agents' versioned JSON state documents.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = command(
        actions, "get", "print an agent's state document (the latest, or an older one)", _get
    )
    p.add_argument("agent_id", metavar="AGENT_ID")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--version", type=positive_int, metavar="N", help="this exact version")
    when.add_argument(
        "--as-of", type=timestamp, metavar="TIME", help="the version current at this ISO 8601 time"
    )

    p = command(actions, "put", "replace an agent's state with a JSON document", _put)
    p.add_argument("agent_id", metavar="AGENT_ID")
    p.add_argument("file", metavar="FILE", help="a JSON object: a file path, or - for stdin")
    _expected_version_option(p)
    p.add_argument(
        "--schema-version",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="schema version of the document (default: 1)",
    )
    _request_id_option(p)

    p = command(actions, "patch", "apply a JSON merge patch (RFC 7386) to an agent's state", _patch)
    p.add_argument("agent_id", metavar="AGENT_ID")
    p.add_argument("file", metavar="FILE", help="a JSON merge patch: a file path, or - for stdin")
    _expected_version_option(p)
    _request_id_option(p)

    p = command(actions, "history", "list an agent's retained state versions", _history)
    p.add_argument("agent_id", metavar="AGENT_ID")
    p.add_argument("--limit", type=positive_int, metavar="N", help="show at most N versions")
    p.add_argument("--documents", action="store_true", help="include each version's document")

    p = command(actions, "clear", "delete an agent's state and its history", _clear)
    p.add_argument("agent_id", metavar="AGENT_ID")
    _request_id_option(p)

    p = command(
        actions, "migrate", "upgrade every stored state of a type to its newest schema", _migrate
    )
    p.add_argument("--type", required=True, dest="agent_type", help="the agent type to migrate")
    p.add_argument(
        "--page-size", type=positive_int, default=100, metavar="N", help="agents per call"
    )
    p.add_argument("--dry-run", action="store_true", help="count what would change; write nothing")
    p.add_argument(
        "--resume-token", default="", metavar="TOKEN", help="continue an interrupted migration"
    )


def _expected_version_option(p: Any) -> None:
    p.add_argument(
        "--expected-version",
        type=non_negative_int,
        metavar="N",
        help="write only if the latest version is still N (0: only if there is no state)",
    )


def _request_id_option(p: Any) -> None:
    p.add_argument("--request-id", help="idempotency key: repeating it repeats nothing")


def read_document(source: str, what: str = "document") -> dict[str, Any]:
    """A JSON object from a file path or ``-`` (stdin); UsageError says what is wrong."""
    name = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name} is not UTF-8 text ({exc.reason})") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise UsageError(f'the {what} in {name} must be a JSON object, like {{"k": 1}}')
    return value


# -- handlers -----------------------------------------------------------------------


def _get(ctx: Context) -> int:
    a = ctx.args
    state = ctx.client().get_state(a.agent_id, version=a.version, as_of=a.as_of)
    if ctx.stderr.isatty() and not a.json:
        ctx.note(f"# {describe(state)}")
    ctx.emit(state, lambda s: json.dumps(s.document, indent=2, ensure_ascii=False))
    return OK


def _put(ctx: Context) -> int:
    a = ctx.args
    document = read_document(a.file)
    saved = ctx.client().save_state(
        a.agent_id, document, a.expected_version, a.schema_version, request_id=a.request_id
    )
    ctx.emit(saved, lambda s: f"saved {describe(s)}")
    return OK


def _patch(ctx: Context) -> int:
    a = ctx.args
    patch = read_document(a.file, "merge patch")
    saved = ctx.client().patch_state(a.agent_id, patch, a.expected_version, a.request_id)
    ctx.emit(saved, lambda s: f"patched {describe(s)}")
    return OK


def _history(ctx: Context) -> int:
    a = ctx.args
    found = ctx.client().iter_state_versions(
        a.agent_id, include_documents=a.documents, page_size=min(a.limit or 0, 1000)
    )
    versions = list(itertools.islice(found, a.limit))
    ctx.emit(versions, lambda items: show_history(items, a.documents))
    return OK


def _clear(ctx: Context) -> int:
    a = ctx.args
    deleted = ctx.client().clear_state(a.agent_id, a.request_id)
    ctx.say(
        f"cleared the state of agent {a.agent_id!r} ({deleted} versions deleted)",
        {"agent_id": a.agent_id, "deleted_versions": deleted},
    )
    return OK


def _migrate(ctx: Context) -> int:
    a = ctx.args
    client = ctx.client()
    token = a.resume_token
    migrated = up_to_date = 0
    target = 0
    failures: list[MigrationFailure] = []
    bar = ProgressBar(f"migrating {a.agent_type}", unit="states", stream=ctx.stderr)
    try:
        while True:
            page = client.migrate_states(a.agent_type, a.page_size, token, a.dry_run)
            migrated += page.migrated
            up_to_date += page.up_to_date
            failures += page.failures
            target = page.target_schema_version
            done = migrated + up_to_date + len(failures)
            bar.update(done, done + page.remaining)
            token = page.next_page_token
            if not token:
                break
    except KeyboardInterrupt:
        bar.close()
        _name_failures(ctx, failures)  # the resume token is past their pages
        ctx.note(f"interrupted; {_resume_hint(ctx, token)}")
        return INTERRUPTED
    except StatewardError:
        bar.close()
        _name_failures(ctx, failures)
        if token:
            ctx.note(_resume_hint(ctx, token))
        raise
    bar.close()
    verb = "would migrate" if a.dry_run else "migrated"
    failed = f", {len(failures)} {'would fail' if a.dry_run else 'failed'}" if failures else ""
    ctx.say(
        f"{verb} {migrated} states of type {a.agent_type!r} to schema version {target} "
        f"({up_to_date} already current{failed})",
        {
            "agent_type": a.agent_type,
            "migrated": migrated,
            "up_to_date": up_to_date,
            "target_schema_version": target,
            "dry_run": a.dry_run,
            "failures": [
                {
                    "agent_id": f.agent_id,
                    "from_schema_version": f.from_schema_version,
                    "message": f.message,
                }
                for f in failures
            ],
        },
    )
    _name_failures(ctx, failures, would=a.dry_run)
    return REFUSED if failures else OK  # some states could not be upgraded


def _name_failures(ctx: Context, failures: list[MigrationFailure], would: bool = False) -> None:
    for failure in failures:
        ctx.note(
            f"agent {failure.agent_id!r}: the migration from schema version "
            f"{failure.from_schema_version} {'would fail' if would else 'failed'}: "
            f"{failure.message}"
        )


def _resume_hint(ctx: Context, token: str) -> str:
    a = ctx.args
    words = ["stateward", "state", "migrate", "--type", a.agent_type]
    if a.namespace != "default":
        words += ["--namespace", a.namespace]
    if a.dry_run:
        words.append("--dry-run")
    if token:
        words += ["--resume-token", token]
    return "resume with: " + shlex.join(words)


# -- rendering ----------------------------------------------------------------------


def describe(state: StateVersion) -> str:
    """``agent 'a1' state version 3 (schema 1, 42 B, 2026-01-01 00:00:00Z)``."""
    when = f", {_format.time(state.create_time)}" if state.create_time else ""
    return (
        f"agent {state.agent_id!r} state version {state.version} "
        f"(schema {state.schema_version}, {_format.human_bytes(state.size_bytes)}{when})"
    )


def show_history(versions: list[StateVersion], documents: bool) -> str:
    if not versions:
        return "no state versions"
    headers = HISTORY_COLUMNS + (("DOCUMENT",) if documents else ())
    rows = []
    for v in versions:
        row: list[Any] = [
            v.version,
            v.schema_version,
            _format.human_bytes(v.size_bytes),
            v.create_time,
            v.event_sequence,
        ]
        if documents:
            row.append(v.document)
        rows.append(row)
    return _format.table(headers, rows)
