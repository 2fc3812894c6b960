"""Opaque page tokens: a keyset cursor bound to the filters it was made for.

A token is URL-safe base64 of a small JSON array ``[filter_digest, cursor...]``. It
carries no authority: the namespace always comes from the call, so a forged token
can at most move the cursor within what the caller may already read. The digest
covers the namespace too, so a token is refused in any namespace but its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from stateward.server.domain.errors import InvalidArgument
from stateward.server.domain.validation import ID_PATTERN

T = TypeVar("T")

INT64 = 1 << 63
MESSAGE_MARGIN = 64 << 10
"""Room in a response for everything besides its records' variable parts."""


def page_budget(max_message_bytes: int) -> int:
    """The bytes of records one list response may carry under the message limit."""
    return max(max_message_bytes - MESSAGE_MARGIN, max_message_bytes // 2)


# Record weights: an upper bound of a record's encoded size, cheap to compute. A string
# costs its UTF-8 bytes (free text need not be ASCII) plus its field framing; every record
# also pays ``RECORD_BYTES`` for its numbers, timestamps, enums and own framing.
RECORD_BYTES = 160
FIELD_BYTES = 5  # tag and length of one string or bytes field
ENTRY_BYTES = 12  # a map entry's framing around its key and value fields


def text_bytes(text: str | None) -> int:
    """A string field's encoded size (``isascii`` is a flag check, not a scan)."""
    if not text:
        return 0
    return FIELD_BYTES + (len(text) if text.isascii() else len(text.encode()))


def blob_bytes(data: bytes | None) -> int:
    return FIELD_BYTES + len(data) if data else 0


def labels_bytes(labels: dict[str, str]) -> int:
    return sum(ENTRY_BYTES + text_bytes(k) + text_bytes(v) for k, v in labels.items())


def fitting(items: Sequence[T], size: int, weigh: Callable[[T], int], budget: int) -> int:
    """How many of the first ``size`` of ``items`` one page holds: as many as ``budget``
    bytes allow, by ``weigh``, and at least one. A page cut short by bytes still has a
    token, so a caller pages on; page_size is a maximum, as in Google's API guidelines."""
    used = 0
    for count, item in enumerate(items[:size]):
        used += weigh(item)
        if count and used > budget:
            return count
    return min(size, len(items))


def page_of(
    items: Sequence[T],
    size: int,
    weigh: Callable[[T], int],
    budget: int,
    digest: str,
    cursor: Callable[[T], list[Any]],
) -> tuple[list[T], str]:
    """The page of ``items`` (read with one extra, which tells that more follow) and its
    next token: at most ``size`` of them, fewer when their bytes would not fit in one
    response. A read that storage cut at its byte budget (``cut``, storage/pages.py) may
    lack the extra row, so the page goes on after its last record whatever it weighs."""
    keep = fitting(items, size, weigh, budget)
    if len(items) > keep or getattr(items, "cut", False):
        kept = list(items[:keep])
        return kept, encode(digest, cursor(kept[-1]))
    return list(items), ""


def filter_digest(namespace: str, listing: str, *filters: Any) -> str:
    """What a token is bound to: the namespace, the listing and its filters. A token
    used elsewhere would move a cursor that means nothing there, skipping records."""
    parts = (namespace, listing, *filters)
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def encode(digest: str, cursor: list[Any]) -> str:
    raw = json.dumps([digest, *cursor], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, digest: str, shape: tuple[type, ...]) -> list[Any] | None:
    """The cursor in ``token`` (None for an empty token); INVALID_ARGUMENT if forged or foreign."""
    if not token:
        return None
    bad = InvalidArgument.one(
        "page_token", "is not a token from a previous response with the same filters"
    )
    if len(token) > 2048:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):  # deep nesting: RecursionError
        raise bad from None
    if not isinstance(value, list) or len(value) != len(shape) + 1 or value[0] != digest:
        raise bad
    cursor = value[1:]
    for item, kind in zip(cursor, shape, strict=True):
        if type(item) is not kind:
            raise bad
        if isinstance(item, int) and not -INT64 <= item < INT64:  # the databases' BIGINT
            raise bad
        # String cursors are ids: anything else (a lone surrogate, a NUL) would reach SQL.
        if isinstance(item, str) and not ID_PATTERN.fullmatch(item):
            raise bad
    return cursor
