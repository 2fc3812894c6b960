"""JSON merge patch (RFC 7386) over parsed JSON values.

A patch that is an object merges member by member: ``null`` removes a member, an
object merges recursively, anything else replaces. A patch that is not an object
replaces the whole target. Neither argument is modified; untouched parts of the
target are shared with the result, not copied.
"""

from __future__ import annotations

from typing import Any


def apply(target: Any, patch: Any) -> Any:
    """The result of applying ``patch`` to ``target`` (RFC 7386, section 2)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = apply(result.get(name), value)
    return result
