"""Input validation, done before anything reaches SQL or a path.

Each check appends to a ``Violations`` so one answer names every bad field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from stateward.server.domain.errors import Violations

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
NAMESPACE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
REQUEST_ID_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
MAX_ID = 128  # ID_PATTERN's length
MAX_TYPE = 128
MAX_LABELS = 64
MAX_LABEL_TEXT = 256
MAX_REASON = 1024
MAX_MESSAGE = 4096
MAX_CONFIG = 1 << 20
MAX_JSON_DEPTH = 64
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def check_id(v: Violations, field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            v.add(field, "is required")
        return
    if not ID_PATTERN.fullmatch(value):
        v.add(
            field,
            "must be 1 to 128 characters of letters, digits and . _ : @ -, "
            "starting with a letter or digit",
        )


def check_namespace(v: Violations, value: str) -> None:
    if not NAMESPACE_PATTERN.fullmatch(value):
        v.add("x-stateward-namespace", "must be 1 to 63 lowercase letters, digits, _ or -")


def check_request_id(v: Violations, value: str) -> None:
    if value and not REQUEST_ID_PATTERN.fullmatch(value):
        v.add("request_id", "must be 1 to 128 printable ASCII characters without spaces")


def check_text(
    v: Violations, field: str, value: str, limit: int, *, required: bool = False
) -> None:
    if required and not value:
        v.add(field, "is required")
    elif len(value) > limit:
        v.add(field, f"must be at most {limit} characters (got {len(value)})")
    elif "\x00" in value:
        v.add(field, "must not contain NUL characters")


def check_labels(v: Violations, field: str, labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        v.add(field, f"at most {MAX_LABELS} labels are allowed (got {len(labels)})")
        return
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_TEXT or "\x00" in key:
            v.add(
                f"{field}[{key[:32]!r}]", f"keys must be 1 to {MAX_LABEL_TEXT} characters, no NUL"
            )
        if len(value) > MAX_LABEL_TEXT or "\x00" in value:
            v.add(
                f"{field}[{key[:32]!r}]",
                f"values must be at most {MAX_LABEL_TEXT} characters, no NUL",
            )


def check_page_size(v: Violations, page_size: int) -> int:
    """Validate and resolve a page size (0 means the default)."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        v.add("page_size", f"must be between 0 and {MAX_PAGE_SIZE} (got {page_size})")
        return DEFAULT_PAGE_SIZE
    return page_size or DEFAULT_PAGE_SIZE


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, stopping early past ``limit``."""
    depth, frontier = 0, [value]
    while frontier:
        children: list[Any] = []
        for item in frontier:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        if not children and not any(isinstance(i, (dict, list)) for i in frontier):
            break
        depth += 1
        if depth > limit:
            return depth
        frontier = children
    return depth


def parse_json(
    v: Violations,
    field: str,
    raw: bytes,
    *,
    limit: int,
    require_object: bool = True,
    empty: Any = None,
) -> Any:
    """Parse a JSON document from bytes, enforcing size, UTF-8, depth and shape.

    Empty bytes mean ``empty`` (``{}`` for objects unless given). Integers of any size
    and floats parse exactly; NaN and Infinity are refused (not JSON).
    """
    if not raw:
        return {} if (empty is None and require_object) else empty
    if len(raw) > limit:
        v.add(field, f"must be at most {limit} bytes (got {len(raw)})")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        v.add(field, f"must be UTF-8 encoded JSON (invalid byte at offset {error.start})")
        return None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        v.add(field, f"must be nested at most {MAX_JSON_DEPTH} levels deep")
        return None
    except ValueError as error:
        v.add(field, f"must be valid JSON ({error})")
        return None
    if require_object and not isinstance(value, dict):
        v.add(field, f"must be a JSON object, not {type(value).__name__}")
        return None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        v.add(field, f"must be nested at most {MAX_JSON_DEPTH} levels deep")
        return None
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
