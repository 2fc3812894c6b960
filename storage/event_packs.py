"""Packed event rows: a run of events appended together, stored as one row.

An AppendEvents call of 100 events used to cost 100 rows and, per row, an entry in the
primary key and in each index of a column the event sets. SQLite spent most of the
writer's time there (~6 µs an event), and the writer thread is the serial part of every
durable write. So consecutive events of one write that share their agent, run and task
run become one row:

- ``sequence`` is the last event's and ``span`` the number of events, so the row holds
  ``sequence - span + 1 .. sequence``; keyset paging on ``sequence`` still finds it;
- ``agent_id``, ``run_id``, ``task_run_id`` and ``created_at`` are every event's, so the
  column filters and their indexes work on the row as on a single event;
- ``type`` is every event's type, or ``""`` when they differ (types are never empty);
- ``data`` is the body below; ``client_time`` is NULL and, when any event has one, each
  event's is in the body.

Body, little-endian: u32 flags (1: types present, 2: client times present), u32 length
of each payload, [u32 byte length + the types joined by "\\n"], [i64 per client time,
``NO_TIME`` for none], then the payloads back to back. Packing and unpacking loop in C
(``array``, ``bytes.join``) so the writer pays microseconds, not a row per event.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add
from typing import Any

MAX_SPAN = 1000  # events in one row: bounds how far before ``sequence`` a row reaches
# Payload bytes in one packed row, as for a single event: a page of N rows (ListEvents
# fetches rows) then costs at most what N single events could.
MAX_BYTES = 64 * 1024
_PER_EVENT = 13
NO_TIME = -(2**63)
_TYPES = 1
_TIMES = 2
_BIG_ENDIAN = sys.byteorder == "big"
Unpacked = tuple[list[bytes], list[str] | None, list[int | None] | None]


def _encode(code: str, values: Sequence[int]) -> bytes:
    out = array(code, values)
    if _BIG_ENDIAN:
        out.byteswap()
    return out.tobytes()


def _decode(code: str, raw: bytes) -> array[int]:
    out = array(code)
    out.frombytes(raw)
    if _BIG_ENDIAN:
        out.byteswap()
    return out


def cuts(datas: Sequence[bytes], types: Sequence[str]) -> list[int]:
    """Where to split a run of events into rows: each end index, so that a row holds at
    most ``MAX_SPAN`` events and weighs at most ``MAX_BYTES`` (or holds one heavier event).
    An event weighs its payload, its type and the 12 bytes of length and client time it may
    take in the body, plus the newline between types."""
    weights = map(add, map(len, datas), map(len, types))
    totals = list(accumulate(map(add, weights, repeat(_PER_EVENT))))
    ends: list[int] = []
    start = done = 0
    while start < len(datas):
        end = bisect_right(totals, done + MAX_BYTES, start, min(len(datas), start + MAX_SPAN))
        end = max(end, start + 1)
        ends.append(end)
        done, start = totals[end - 1], end
    return ends


def pack(datas: Sequence[bytes], types: Sequence[str] | None, times: Sequence[int | None]) -> bytes:
    """The body of a packed row; ``types`` is None when the row's type column says it.

    Raises ValueError for what the body cannot hold: a type with a newline, or a client
    time of exactly ``NO_TIME`` (AppendEvents' validation lets neither through).
    """
    if types is not None and any("\n" in t for t in types):
        raise ValueError("an event type in a packed row must not contain a newline")
    if NO_TIME in times:
        raise ValueError("a client time in a packed row must not be -2**63")
    timed = any(t is not None for t in times)
    flags = (_TYPES if types is not None else 0) | (_TIMES if timed else 0)
    parts = [_encode("I", [flags]), _encode("I", list(map(len, datas)))]
    if types is not None:
        joined = "\n".join(types).encode()
        parts += [_encode("I", [len(joined)]), joined]
    if timed:
        parts.append(_encode("q", [NO_TIME if t is None else t for t in times]))
    parts.extend(datas)
    return b"".join(parts)


def unpack(body: bytes, span: int) -> Unpacked:
    """(payloads, types or None, client times or None) of a packed row of ``span`` events.

    Raises ValueError if the body is not one of ``span`` events.
    """
    try:
        return _unpack(bytes(body), span)
    except (ValueError, IndexError, UnicodeDecodeError) as error:
        raise ValueError(f"a packed event row of {span} events is malformed") from error


def events_of(row: Any) -> list[tuple[Any, ...]]:
    """Each event of a packed row, as the fields EventRecord and EventDraft share (namespace,
    sequence, type, data, created_at, agent_id, run_id, task_run_id, client_time)."""
    datas, types, times = unpack(row.data, row.span)
    first = row.sequence - row.span + 1
    return [
        (
            row.namespace,
            first + i,
            types[i] if types is not None else row.type,
            data,
            row.created_at,
            row.agent_id,
            row.run_id,
            row.task_run_id,
            times[i] if times is not None else None,
        )
        for i, data in enumerate(datas)
    ]


def _unpack(body: bytes, span: int) -> Unpacked:
    flags = _decode("I", body[:4])[0]
    at = 4 + 4 * span
    lengths = _decode("I", body[4:at])
    types: list[str] | None = None
    times: list[int | None] | None = None
    if flags & _TYPES:
        size = _decode("I", body[at : at + 4])[0]
        types = body[at + 4 : at + 4 + size].decode().split("\n")
        at += 4 + size
    if flags & _TIMES:
        times = [None if t == NO_TIME else t for t in _decode("q", body[at : at + 8 * span])]
        at += 8 * span
    ends = list(accumulate(lengths, initial=at))
    datas = [body[start:end] for start, end in zip(ends, ends[1:], strict=False)]
    if (
        len(lengths) != span
        or ends[-1] != len(body)
        or (types is not None and len(types) != span)
        or (times is not None and len(times) != span)
    ):
        raise ValueError("counts disagree")
    return datas, types, times
