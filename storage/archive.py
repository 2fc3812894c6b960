"""Run archives: finished workflow runs with their task runs and events, as compressed
JSON Lines on any fsspec URL, and the deletion of what was archived.

Format (``stateward-archive/1``), one JSON object per line::

    {"kind": "header", "format": "stateward-archive/1", "namespace": ..., "ended_before": ..., ...}
    {"kind": "run", <workflow_runs columns>}
    {"kind": "task_run", <task_runs columns>}      (after the run they belong to)
    {"kind": "event", <events columns>}            (after the run they belong to)
    {"kind": "trailer", "runs": N, "task_runs": N, "events": N}

Times are integer microseconds (UTC). Byte columns (JSON documents, event data) are
written as their UTF-8 text; bytes that are not UTF-8 go to ``<column>_b64`` instead.
The file is gzip (``.gz``) or zstd (``.zst``) compressed, chosen by its name.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import zstandard
from sqlalchemy import Connection, Table, delete, func, select

from stateward.storage import events as event_log
from stateward.storage import labels as label_rows
from stateward.storage import schema
from stateward.storage.records import EventRecord

FORMAT = "stateward-archive/1"
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED")
SUFFIXES = (".jsonl.gz", ".jsonl.zst")
BATCH = 500

w = schema.workflow_runs
t = schema.task_runs
e = schema.events


class ArchiveError(Exception):
    """An archive could not be written, read back or verified."""


@dataclass(slots=True)
class ArchiveSummary:
    """What an archive holds, and the sha256 of its uncompressed lines."""

    url: str
    run_ids: list[str]
    runs: int = 0
    task_runs: int = 0
    events: int = 0
    # Each run's newest archived event: deletion stops there, per run. On PostgreSQL the
    # archive reads one batch of runs per statement, so an event appended to an early run
    # meanwhile may be older than what a later batch read, and is not in the archive.
    last_events: dict[str, int] = field(default_factory=dict)
    sha256: str = ""


# -- selection -------------------------------------------------------------------------------
def finished_run_ids(conn: Connection, namespace: str, ended_before: int, limit: int) -> list[str]:
    """Finished runs of a namespace that ended before the cutoff, oldest first."""
    rows = conn.execute(
        select(w.c.run_id)
        .where(
            w.c.namespace == namespace,
            w.c.status.in_(FINISHED),
            w.c.ended_at < ended_before,
        )
        .order_by(w.c.ended_at, w.c.run_id)
        .limit(limit)
    ).all()
    return [row.run_id for row in rows]


def count_children(conn: Connection, namespace: str, run_ids: list[str]) -> tuple[int, int]:
    """(task runs, events) belonging to the given runs."""
    tasks = events = 0
    for start in range(0, len(run_ids), BATCH):
        batch = run_ids[start : start + BATCH]
        tasks += int(
            conn.execute(
                select(func.count())
                .select_from(t)
                .where(t.c.namespace == namespace, t.c.run_id.in_(batch))
            ).scalar_one()
        )
        events += _events_of(conn, namespace, batch)
    return tasks, events


def _events_of(
    conn: Connection, namespace: str, run_ids: list[str], up_to: int | None = None
) -> int:
    """How many events the given runs have (a packed row holds ``span`` of them)."""
    query = select(func.coalesce(func.sum(e.c.span), 0)).where(
        e.c.namespace == namespace, e.c.run_id.in_(run_ids)
    )
    if up_to is not None:
        query = query.where(e.c.sequence <= up_to)
    return int(conn.execute(query).scalar_one())


# -- encoding --------------------------------------------------------------------------------
def _line(kind: str, table: Table, row: Any) -> dict[str, Any]:
    return _item(kind, [(column.name, getattr(row, column.name)) for column in table.columns])


# An event's line has the events columns a single event's row has (not ``span``): packed
# rows are written out one event per line, so archives read the same whatever the storage.
_EVENT_FIELDS = tuple(column.name for column in e.columns if column.name != "span")


def _event_line(record: EventRecord) -> dict[str, Any]:
    return _item("event", [(name, getattr(record, name)) for name in _EVENT_FIELDS])


def _item(kind: str, fields: list[tuple[str, Any]]) -> dict[str, Any]:
    item: dict[str, Any] = {"kind": kind}
    for name, value in fields:
        if isinstance(value, (bytes, memoryview)):
            raw = bytes(value)
            try:
                item[name] = raw.decode("utf-8")
            except UnicodeDecodeError:
                item[name + "_b64"] = base64.b64encode(raw).decode("ascii")
        else:
            item[name] = value
    return item


def _compressor(url: str, raw: Any) -> Any:
    if url.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)
    return zstandard.ZstdCompressor(level=6).stream_writer(raw, closefd=False)


def _decompressor(url: str, raw: Any) -> Any:
    if url.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)


def check_url(url: str) -> None:
    """Refuse archive URLs that are not a plain file on a supported backend."""
    protocol, _, path = url.partition("://")
    if protocol not in ("file", "s3", "memory") or not path:
        raise ArchiveError("the archive URL must start with file://, s3:// or memory://")
    if not url.endswith(SUFFIXES):
        raise ArchiveError(f"the archive file name must end with {' or '.join(SUFFIXES)}")
    if any(part in ("..", ".") for part in path.split("/")) or "%" in path or "\\" in path:
        raise ArchiveError("the archive URL must not contain '.', '..', '%' or '\\' segments")


def check_under_root(url: str, root: str) -> None:
    """Refuse archive URLs outside the configured archive root (same scheme, path prefix).

    A client-chosen URL must not make the server write anywhere it can reach.
    """
    scheme, _, path = url.partition("://")
    root_scheme, _, root_path = root.partition("://")
    if scheme == "file" and root_scheme == "file":
        path, root_path = os.path.realpath(path), os.path.realpath(root_path)
    else:
        path, root_path = posixpath.normpath(path), posixpath.normpath(root_path)
    prefix = root_path.rstrip("/") + "/"
    if scheme != root_scheme or not path.startswith(prefix):
        raise ArchiveError(f"the archive URL must be under the configured archive root {root}/")


# -- writing ---------------------------------------------------------------------------------
def write_archive(
    conn: Connection,
    namespace: str,
    run_ids: list[str],
    url: str,
    *,
    ended_before: int,
    now: int,
    storage_options: dict[str, Any] | None = None,
) -> ArchiveSummary:
    """Stream the runs (with task runs and events) to ``url``, reading through ``conn`` (one
    snapshot on SQLite; one per statement on PostgreSQL, see ``ArchiveSummary.last_events``).

    Memory stays bounded by one batch of runs. Refuses to overwrite an existing file.
    """
    check_url(url)
    fs, path = fsspec.core.url_to_fs(url, **_options(url, storage_options))
    if fs.exists(path):
        raise ArchiveError(f"{url} already exists; archives are never overwritten")
    summary = ArchiveSummary(url, list(run_ids))
    digest = hashlib.sha256()
    with fs.open(path, "wb") as raw:
        sink = _compressor(url, raw)

        def emit(item: dict[str, Any]) -> None:
            data = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            digest.update(data)
            sink.write(data)

        emit(
            {
                "kind": "header",
                "format": FORMAT,
                "namespace": namespace,
                "ended_before": ended_before,
                "created_at": now,
            }
        )
        for start in range(0, len(run_ids), BATCH):
            batch = run_ids[start : start + BATCH]
            runs = conn.execute(
                select(w)
                .where(w.c.namespace == namespace, w.c.run_id.in_(batch))
                .order_by(w.c.ended_at, w.c.run_id)
            ).all()
            tasks: dict[str, list[Any]] = {}
            for row in conn.execute(
                select(t).where(t.c.namespace == namespace, t.c.run_id.in_(batch)).order_by(t.c.seq)
            ):
                tasks.setdefault(row.run_id, []).append(row)
            events: dict[str, list[EventRecord]] = {}
            for row in conn.execute(
                select(e)
                .where(e.c.namespace == namespace, e.c.run_id.in_(batch))
                .order_by(e.c.sequence)
            ):
                events.setdefault(row.run_id, []).extend(event_log.records_from_row(row))
            for run in runs:
                emit(_line("run", w, run))
                summary.runs += 1
                for task in tasks.get(run.run_id, ()):
                    emit(_line("task_run", t, task))
                    summary.task_runs += 1
                for event in events.get(run.run_id, ()):
                    emit(_event_line(event))
                    summary.events += 1
                    summary.last_events[run.run_id] = event.sequence
        emit(
            {
                "kind": "trailer",
                "runs": summary.runs,
                "task_runs": summary.task_runs,
                "events": summary.events,
            }
        )
        sink.close()  # finishes the compressed stream; gzip/zstd leave ``raw`` open
    summary.sha256 = digest.hexdigest()
    return summary


def verify_archive(summary: ArchiveSummary, storage_options: dict[str, Any] | None = None) -> None:
    """Read the archive back; raise ArchiveError unless counts and sha256 match."""
    digest = hashlib.sha256()
    counts = {"run": 0, "task_run": 0, "event": 0}
    trailer: dict[str, Any] | None = None
    for raw_line in _raw_lines(summary.url, storage_options):
        digest.update(raw_line)
        item = json.loads(raw_line)
        kind = item.get("kind")
        if kind in counts:
            counts[kind] += 1
        elif kind == "trailer":
            trailer = item
    expected = {"run": summary.runs, "task_run": summary.task_runs, "event": summary.events}
    if counts != expected or trailer is None or digest.hexdigest() != summary.sha256:
        raise ArchiveError(
            f"the archive {summary.url} did not read back as written "
            f"(found {counts}, wrote {expected}); nothing was deleted"
        )


def _options(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(storage_options or {}) if url.startswith("s3://") else {}
    if url.startswith("file://"):
        options["auto_mkdir"] = True
    return options


def _raw_lines(url: str, storage_options: dict[str, Any] | None) -> Iterator[bytes]:
    fs, path = fsspec.core.url_to_fs(url, **_options(url, storage_options))
    with fs.open(path, "rb") as raw:
        source = _decompressor(url, raw)
        # zstd's reader has no readline: buffer it (gzip's already is).
        yield from (source if url.endswith(".gz") else io.BufferedReader(source))


def read_archive(
    url: str, storage_options: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """Every record of an archive, header and trailer included, in file order.

    For ``stateward archive show``; reads lazily, so any size streams in bounded memory.
    """
    check_url(url)
    for raw_line in _raw_lines(url, storage_options):
        if raw_line.strip():
            yield json.loads(raw_line)


# -- deleting --------------------------------------------------------------------------------
def delete_archived(
    conn: Connection, namespace: str, run_ids: list[str], last_events: dict[str, int]
) -> tuple[int, int, int]:
    """Delete the archived runs, their task runs, and each run's events up to the newest one
    archived for it (an event appended to a finished run after it was read stays). Only
    runs still finished are touched. Returns (runs, task runs, events) deleted."""
    runs = tasks = events = 0
    for start in range(0, len(run_ids), BATCH):
        batch = run_ids[start : start + BATCH]
        by_last: dict[int, list[str]] = {}
        for run_id in batch:
            if run_id in last_events:
                by_last.setdefault(last_events[run_id], []).append(run_id)
        for last, owners in by_last.items():
            events += _events_of(conn, namespace, owners, up_to=last)
            conn.execute(
                delete(e).where(
                    e.c.namespace == namespace, e.c.run_id.in_(owners), e.c.sequence <= last
                )
            )
        tasks += int(
            conn.execute(
                delete(t).where(t.c.namespace == namespace, t.c.run_id.in_(batch))
            ).rowcount
            or 0
        )
        runs += int(
            conn.execute(
                delete(w).where(
                    w.c.namespace == namespace, w.c.run_id.in_(batch), w.c.status.in_(FINISHED)
                )
            ).rowcount
            or 0
        )
        for run_id in batch:
            label_rows.remove(conn, namespace, "run", run_id)
    return runs, tasks, events
