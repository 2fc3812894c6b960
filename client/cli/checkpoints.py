"""``stateward checkpoints ...``: snapshot agents, move payloads, restore, prune."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import Checkpoint
from .._transfer import DEFAULT_CHUNK, MAX_CHUNK
from ..errors import UsageError
from ..models import PrunedCheckpoints
from . import _format
from ._args import command, duration, label, non_negative_int, positive_int
from ._context import OK, Context
from ._progress import ProgressBar

COLUMNS = ("CHECKPOINT", "AGENT", "STATE VERSION", "SIZE", "LABELS", "CREATED")


def register(commands: Any) -> None:
    group = commands.add_parser(
        "checkpoints",
        help="snapshot agents, upload and download payloads, restore, prune",
        description="Snapshot agents into checkpoints, move their payloads, restore them.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = command(actions, "create", "snapshot an agent's current state (+ a small payload)", _create)
    p.add_argument("agent_id", metavar="AGENT_ID")
    p.add_argument(
        "--payload", metavar="FILE", help="attach this file (or - for stdin) as the payload"
    )
    _label_option(p)
    _request_id_option(p)

    p = command(actions, "upload", "snapshot an agent with a payload of any size", _upload)
    p.add_argument("agent_id", metavar="AGENT_ID")
    p.add_argument("file", metavar="FILE", help="the payload: a file path, or - for stdin")
    p.add_argument(
        "--chunk-size",
        type=positive_int,
        default=DEFAULT_CHUNK,
        metavar="BYTES",
        help=f"bytes per message, at most {MAX_CHUNK} (default %(default)s)",
    )
    _label_option(p)
    _request_id_option(p)

    p = command(actions, "download", "save a checkpoint's payload, verified", _download)
    p.add_argument("checkpoint_id", metavar="CHECKPOINT_ID")
    p.add_argument(
        "dest",
        nargs="?",
        metavar="DEST",
        help="where to write it (default: ./CHECKPOINT_ID; - for stdout)",
    )

    p = command(actions, "list", "list checkpoints, newest first", _list)
    p.add_argument("--agent", default="", metavar="AGENT_ID", help="only this agent's")
    p.add_argument("--limit", type=positive_int, metavar="N", help="show at most N checkpoints")

    p = command(actions, "show", "show one checkpoint's manifest", _show)
    p.add_argument("checkpoint_id", metavar="CHECKPOINT_ID")

    p = command(actions, "delete", "delete a checkpoint and its payload", _delete)
    p.add_argument("checkpoint_id", metavar="CHECKPOINT_ID")
    _request_id_option(p)

    p = command(
        actions, "restore", "write a checkpoint's state as the agent's new version", _restore
    )
    p.add_argument("checkpoint_id", metavar="CHECKPOINT_ID")
    p.add_argument(
        "--expected-version",
        type=non_negative_int,
        metavar="N",
        help="restore only if the agent's latest state version is still N",
    )
    p.add_argument("--reinit", action="store_true", help="also move the agent ERROR -> INITIALIZED")
    _request_id_option(p)

    p = command(actions, "prune", "delete old checkpoints by the retention policy", _prune)
    p.add_argument("--agent", default="", metavar="AGENT_ID", help="only this agent's")
    p.add_argument(
        "--keep-last",
        type=positive_int,
        default=0,
        metavar="N",
        help="keep the N newest per agent (default: the server's policy)",
    )
    p.add_argument(
        "--max-age",
        type=duration,
        metavar="AGE",
        help="delete those older than AGE, e.g. 30d (default: the server's policy)",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would go; delete nothing")


def _label_option(p: Any) -> None:
    p.add_argument(
        "--label", type=label, action="append", metavar="KEY=VALUE", help="label (repeatable)"
    )


def _request_id_option(p: Any) -> None:
    p.add_argument("--request-id", help="idempotency key: repeating it repeats nothing")


# -- handlers -----------------------------------------------------------------------


def _create(ctx: Context) -> int:
    a = ctx.args
    payload = b""
    if a.payload:
        payload = _read_bytes(a.payload)
    checkpoint = ctx.client().create_checkpoint(
        a.agent_id, payload, dict(a.label or ()), a.request_id
    )
    ctx.emit(checkpoint, lambda c: f"created {describe(c)}")
    return OK


def _upload(ctx: Context) -> int:
    a = ctx.args
    source: Any = sys.stdin.buffer if a.file == "-" else a.file
    if a.file != "-" and not Path(a.file).is_file():
        raise UsageError(f"{a.file} is not a readable file")
    bar = ProgressBar("uploading", stream=ctx.stderr)
    try:
        checkpoint = ctx.client().upload_checkpoint(
            a.agent_id,
            source,
            labels=dict(a.label or ()),
            chunk_size=a.chunk_size,
            request_id=a.request_id,
            progress=bar.update,
        )
    finally:
        bar.close()
    ctx.emit(checkpoint, lambda c: f"uploaded {describe(c)}")
    return OK


def _download(ctx: Context) -> int:
    a = ctx.args
    dest = a.dest or a.checkpoint_id
    if dest != "-" and Path(dest).is_dir():
        dest = str(Path(dest) / a.checkpoint_id)
    target: Any = dest
    if dest == "-":
        if ctx.stdout.isatty():
            raise UsageError("refusing to write binary data to a terminal; give a file name")
        target = sys.stdout.buffer
    bar = ProgressBar("downloading", stream=ctx.stderr)
    try:
        checkpoint = ctx.client().download_checkpoint(a.checkpoint_id, target, progress=bar.update)
    finally:
        bar.close()
    if dest == "-":
        sys.stdout.buffer.flush()
        ctx.note(f"downloaded {describe(checkpoint)}")
    else:
        ctx.emit(checkpoint, lambda c: f"downloaded {describe(c)} to {dest}")
    return OK


def _list(ctx: Context) -> int:
    a = ctx.args
    found = ctx.client().iter_checkpoints(a.agent, page_size=min(a.limit or 0, 1000))
    checkpoints = list(itertools.islice(found, a.limit))
    ctx.emit(checkpoints, lambda items: show_checkpoints(items) if items else "no checkpoints")
    return OK


def _show(ctx: Context) -> int:
    ctx.emit(ctx.client().get_checkpoint(ctx.args.checkpoint_id), show_checkpoint)
    return OK


def _delete(ctx: Context) -> int:
    a = ctx.args
    ctx.client().delete_checkpoint(a.checkpoint_id, a.request_id)
    ctx.say(
        f"deleted checkpoint {a.checkpoint_id}",
        {"checkpoint_id": a.checkpoint_id, "deleted": True},
    )
    return OK


def _restore(ctx: Context) -> int:
    a = ctx.args
    restored = ctx.client().restore_checkpoint(
        a.checkpoint_id, a.expected_version, a.reinit, a.request_id
    )
    agent = restored.agent
    ctx.emit(
        restored,
        lambda r: (
            f"restored {a.checkpoint_id} into agent {agent.agent_id!r} as state version "
            f"{r.state_version}; the agent is {agent.status}"
        ),
    )
    return OK


def _prune(ctx: Context) -> int:
    a = ctx.args
    pruned = ctx.client().prune_checkpoints(a.agent, a.keep_last, a.max_age, a.dry_run)
    ctx.emit(pruned, lambda p: show_pruned(p, a.dry_run))
    return OK


def _read_bytes(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from exc


# -- rendering ----------------------------------------------------------------------


def describe(checkpoint: Checkpoint) -> str:
    """``checkpoint ckpt_01... of agent 'a1' (state version 3, 1.5 MiB)``."""
    return (
        f"checkpoint {checkpoint.checkpoint_id} of agent {checkpoint.agent_id!r} "
        f"(state version {checkpoint.state_version}, {_format.human_bytes(checkpoint.size_bytes)})"
    )


def _labels(checkpoint: Checkpoint) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(checkpoint.labels.items())) or "-"


def show_checkpoints(checkpoints: Iterable[Checkpoint]) -> str:
    return _format.table(
        COLUMNS,
        [
            (
                c.checkpoint_id,
                c.agent_id,
                c.state_version,
                _format.human_bytes(c.size_bytes),
                _labels(c),
                c.create_time,
            )
            for c in checkpoints
        ],
    )


def show_checkpoint(checkpoint: Checkpoint) -> str:
    return _format.details(
        [
            ("checkpoint", checkpoint.checkpoint_id),
            ("agent", checkpoint.agent_id),
            ("state version", checkpoint.state_version or "none (the agent had no state)"),
            (
                "size",
                f"{checkpoint.size_bytes} bytes ({_format.human_bytes(checkpoint.size_bytes)})",
            ),
            ("sha256", checkpoint.sha256 or None),
            ("labels", _labels(checkpoint)),
            ("created", checkpoint.create_time),
        ]
    )


def show_pruned(pruned: PrunedCheckpoints, dry_run: bool) -> str:
    verb = "would delete" if dry_run else "deleted"
    count = pruned.deleted_count
    summary = (
        f"{verb} {count} checkpoint{'s' if count != 1 else ''} "
        f"({_format.human_bytes(pruned.freed_bytes)})"
    )
    if not pruned.deleted:
        return summary
    listed = show_checkpoints(pruned.deleted)
    if pruned.deleted_truncated:
        listed += f"\n... and {count - len(pruned.deleted)} more"
    return listed + "\n" + summary
