"""State migrations used by the tests (wired with ``state_migrations``).

Agent type ``counter``: schema 1 ``{"count": n}`` -> 2 ``{"total": n}`` ->
3 ``{"total": n, "unit": "items"}``. Type ``broken`` has a migration that raises;
type ``picky``'s misbehaves only on documents marked ``"bad"``: it raises, returns
something that is not JSON (``"set"``), calls ``sys.exit`` (``"exit"``), or returns a
document too big to store (``"grow"``).
"""

from __future__ import annotations

import sys
from typing import Any

from stateward.server.domain.schema_migrations import MigrationRegistry


def rename_count(document: dict[str, Any]) -> dict[str, Any]:
    document["total"] = document.pop("count", 0)
    return document


def add_unit(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "unit": "items"}


def explode(document: dict[str, Any]) -> dict[str, Any]:
    raise KeyError("no field 'legacy' in the document")


def refuse_bad(document: dict[str, Any]) -> dict[str, Any]:
    bad = document.get("bad")
    if bad == "set":
        return {"tags": {"a", "b"}}
    if bad == "exit":
        sys.exit(3)
    if bad == "grow":
        return {**document, "pad": "x" * (9 << 20)}  # over what one answer carries
    if bad:
        raise ValueError("this document is marked bad")
    return {**document, "checked": True}


def register(registry: MigrationRegistry) -> None:
    registry.add("counter", 1, rename_count)
    registry.add("counter", 2, add_unit)
    registry.add("broken", 1, explode)
    registry.add("picky", 1, refuse_bad)
