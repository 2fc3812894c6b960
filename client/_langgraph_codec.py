"""How ``StatewardSaver`` lays LangGraph threads out on Stateward records. Pure; no I/O.

* A thread is one agent, ``lg.<thread_id>`` (``lg:<sha256>`` when the thread id
  is not a valid agent id suffix), of type ``langgraph.thread``; its config
  holds the thread id.
* A LangGraph checkpoint is one Stateward checkpoint of that agent: the
  payload is an envelope holding the serialized checkpoint and metadata; labels
  carry what lookups need without the payload (namespace, checkpoint id,
  parent id, run id and scalar metadata values).
* One ``put_writes`` call is one more Stateward checkpoint, ``lg.kind=writes``,
  labelled with the checkpoint it belongs to and the task id.

Labels are at most 256 characters: a longer value is stored as
``sha256:<hex>`` of itself, and the payload keeps the real value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

AGENT_TYPE = "langgraph.thread"
AGENT_LABELS = {"stateward.dev/langgraph": "thread"}
PLAIN_PREFIX = "lg."
HASHED_PREFIX = "lg:"

KIND = "lg.kind"
NS = "lg.ns"
ID = "lg.id"
PARENT = "lg.parent"
RUN_ID = "lg.run_id"
TASK = "lg.task"
META = "lg.meta"
META_PREFIX = "lg.m."
CHECKPOINT = "checkpoint"
WRITES = "writes"

UNKNOWN = "?"
"""A metadata label value meaning "present, but only the payload has it" (not JSON)."""

MAX_LABEL = 256
MAX_LABELS = 64
_RESERVED_LABELS = 8  # kind, ns, id, parent, run_id, meta and room to spare
_AGENT_SUFFIX = re.compile(r"[A-Za-z0-9._:@-]{1,125}")

MAGIC = b"SWLG\x01"
"""Envelope format marker and version."""


# -- ids and labels ------------------------------------------------------------------


def thread_agent_id(thread_id: str) -> str:
    """The agent that stores ``thread_id``: readable when possible, hashed otherwise."""
    if _AGENT_SUFFIX.fullmatch(thread_id):
        return PLAIN_PREFIX + thread_id
    return HASHED_PREFIX + hashlib.sha256(thread_id.encode()).hexdigest()


def is_thread_agent(agent_id: str) -> bool:
    return agent_id.startswith((PLAIN_PREFIX, HASHED_PREFIX))


def plain_thread_id(agent_id: str) -> str | None:
    """The thread id readable from the agent id; None for a hashed one (see its config)."""
    return agent_id[len(PLAIN_PREFIX) :] if agent_id.startswith(PLAIN_PREFIX) else None


def label_value(text: str) -> str:
    """``text`` as a label value: itself when it fits, else a digest that stands for it."""
    if len(text) <= MAX_LABEL and "\x00" not in text:
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def checkpoint_labels(
    checkpoint_ns: str, checkpoint_id: str, parent_id: str | None, metadata: Mapping[str, Any]
) -> dict[str, str]:
    labels = {KIND: CHECKPOINT, NS: label_value(checkpoint_ns), ID: label_value(checkpoint_id)}
    if parent_id:
        labels[PARENT] = label_value(parent_id)
    run_id = metadata.get("run_id")
    if run_id is not None:
        labels[RUN_ID] = label_value(str(run_id))
    labels.update(_metadata_labels(metadata))
    return labels


def _metadata_labels(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Metadata keys as labels, so ``list(filter=...)`` can skip most payloads.

    A scalar value is labelled with its JSON; any other value (a dict, a long
    string) with ``?``, "present, read the payload". ``lg.meta`` is ``full``
    when every key got a label: then a key without one is known to be absent.
    """
    labels: dict[str, str] = {}
    complete = True
    budget = MAX_LABELS - _RESERVED_LABELS
    for key, value in metadata.items():
        name = META_PREFIX + key
        if len(name) > MAX_LABEL or "\x00" in name or len(labels) >= budget:
            complete = False
            continue
        labels[name] = _scalar_json(value) or UNKNOWN
    labels[META] = "full" if complete else "partial"
    return labels


def _scalar_json(value: Any) -> str | None:
    if value is not None and not isinstance(value, str | int | float | bool):
        return None
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_LABEL and "\x00" not in text else None


def writes_labels(checkpoint_ns: str, checkpoint_id: str, task_id: str) -> dict[str, str]:
    return {
        KIND: WRITES,
        NS: label_value(checkpoint_ns),
        ID: label_value(checkpoint_id),
        TASK: label_value(task_id),
    }


def filter_verdict(labels: Mapping[str, str], wanted: Mapping[str, Any]) -> bool | None:
    """Whether the metadata matches ``wanted`` (each key equal), judged from labels alone;
    None when only the payload can tell."""
    complete = labels.get(META) == "full"
    unknown = False
    for key, expected in wanted.items():
        text = labels.get(META_PREFIX + key)
        if text == UNKNOWN:
            unknown = True
        elif text is not None:
            if json.loads(text) != expected:
                return False
        elif complete:
            if expected is not None:  # the key is absent, and absent == None
                return False
        else:
            unknown = True
    return None if unknown else True


def metadata_matches(metadata: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(metadata.get(key) == value for key, value in wanted.items())


# -- manifests -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    """A listed Stateward checkpoint manifest: as much of it as the saver reads."""

    checkpoint_id: str
    agent_id: str
    labels: Mapping[str, str]
    payload: bytes | None  # inline payloads only, when the listing asked for them


@dataclass(frozen=True, slots=True)
class Entry:
    """A Stateward checkpoint manifest read as a LangGraph record."""

    manifest_id: str
    agent_id: str
    kind: str
    ns: str  # label values (see label_value)
    checkpoint_id: str
    labels: Mapping[str, str]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.agent_id, self.ns, self.checkpoint_id)


def entries(manifests: Iterable[Manifest]) -> list[Entry]:
    """The LangGraph records among ``manifests`` (newest first, as listed)."""
    found = []
    for m in manifests:
        kind = m.labels.get(KIND)
        if kind in (CHECKPOINT, WRITES) and is_thread_agent(m.agent_id):
            found.append(
                Entry(
                    m.checkpoint_id,
                    m.agent_id,
                    kind,
                    m.labels.get(NS, ""),
                    m.labels.get(ID, ""),
                    m.labels,
                )
            )
    return found


def checkpoints(found: Sequence[Entry]) -> list[Entry]:
    """The checkpoint records, one per (thread, namespace, id) (the newest stored, should a
    put have been repeated), ordered by LangGraph checkpoint id, newest first."""
    seen: dict[tuple[str, str, str], Entry] = {}
    for entry in found:  # newest first: the first one seen wins
        if entry.kind == CHECKPOINT:
            seen.setdefault(entry.key, entry)
    return sorted(seen.values(), key=lambda e: (e.checkpoint_id, e.agent_id, e.ns), reverse=True)


def writes_of(found: Sequence[Entry], key: tuple[str, str, str]) -> list[Entry]:
    """The writes records of the checkpoint ``key``, oldest first (the order they merge in)."""
    return [e for e in reversed(found) if e.kind == WRITES and e.key == key]


def superseded(found: Sequence[Entry], keep: Iterable[tuple[str, str, str]]) -> list[Entry]:
    """Every record except the checkpoints ``keep`` (their newest copy) and their writes."""
    kept = set(keep)
    survivors = {e.manifest_id for e in checkpoints(found) if e.key in kept}
    return [
        e
        for e in found
        if e.manifest_id not in survivors and not (e.kind == WRITES and e.key in kept)
    ]


# -- payload envelopes ---------------------------------------------------------------


def pack(header: dict[str, Any], parts: Sequence[bytes]) -> bytes:
    """``MAGIC``, a 4-byte header length, the JSON header (with each part's size), the parts."""
    header = {**header, "sizes": [len(p) for p in parts]}
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([MAGIC, len(head).to_bytes(4, "big"), head, *parts])


def unpack(payload: bytes) -> tuple[dict[str, Any], list[bytes]]:
    if not payload.startswith(MAGIC):
        raise ValueError("not a StatewardSaver payload (unknown envelope)")
    start = len(MAGIC) + 4
    size = int.from_bytes(payload[len(MAGIC) : start], "big")
    header = json.loads(payload[start : start + size])
    parts, offset = [], start + size
    for length in header["sizes"]:
        parts.append(payload[offset : offset + length])
        offset += length
    if offset != len(payload):
        raise ValueError("StatewardSaver payload has trailing or missing bytes")
    return header, parts


def pack_checkpoint(
    checkpoint_ns: str,
    checkpoint_id: str,
    parent_id: str | None,
    checkpoint: tuple[str, bytes],
    metadata: tuple[str, bytes],
) -> bytes:
    header = {
        "kind": CHECKPOINT,
        "ns": checkpoint_ns,
        "id": checkpoint_id,
        "parent": parent_id,
        "types": [checkpoint[0], metadata[0]],
    }
    return pack(header, [checkpoint[1], metadata[1]])


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    checkpoint: tuple[str, bytes]
    metadata: tuple[str, bytes]


def unpack_checkpoint(payload: bytes) -> StoredCheckpoint:
    header, (checkpoint, metadata) = unpack(payload)
    types = header["types"]
    return StoredCheckpoint(
        header["ns"], header["id"], header["parent"], (types[0], checkpoint), (types[1], metadata)
    )


@dataclass(frozen=True, slots=True)
class StoredWrite:
    task_id: str
    task_path: str
    idx: int
    channel: str
    value: tuple[str, bytes]


def pack_writes(
    checkpoint_ns: str,
    checkpoint_id: str,
    task_id: str,
    task_path: str,
    writes: Sequence[tuple[int, str, tuple[str, bytes]]],
) -> bytes:
    """One put_writes call: ``(idx, channel, typed value)`` per write."""
    header = {
        "kind": WRITES,
        "ns": checkpoint_ns,
        "id": checkpoint_id,
        "task_id": task_id,
        "task_path": task_path,
        "writes": [[idx, channel, value[0]] for idx, channel, value in writes],
    }
    return pack(header, [value[1] for _, _, value in writes])


def unpack_writes(payload: bytes) -> list[StoredWrite]:
    header, parts = unpack(payload)
    return [
        StoredWrite(header["task_id"], header["task_path"], idx, channel, (kind, data))
        for (idx, channel, kind), data in zip(header["writes"], parts, strict=True)
    ]


def merge_writes(batches: Iterable[Sequence[StoredWrite]]) -> list[StoredWrite]:
    """The pending writes of a checkpoint from its put_writes calls, oldest call first.

    Like LangGraph's own savers: a regular write (idx >= 0) is stored once, the
    first time; a special one (ERROR, INTERRUPT...: idx < 0) is replaced by a
    later one. Returned in ``writes_sort_key`` order (task path, task id, idx).
    """
    merged: dict[tuple[str, int], StoredWrite] = {}
    for batch in batches:
        for write in batch:
            key = (write.task_id, write.idx)
            if write.idx >= 0 and key in merged:
                continue
            merged[key] = write
    return sorted(merged.values(), key=lambda w: (w.task_path, w.task_id, w.idx))
