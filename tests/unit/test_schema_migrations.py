"""The registry of state schema migrations: targets, upgrade chains, bad setups."""

from __future__ import annotations

from typing import Any

import pytest

from stateward.server.domain.schema_migrations import (
    MigrationFailed,
    MigrationRegistry,
    MigrationSetupError,
    load,
)


def test_target_and_upgrade_chain_from_a_module() -> None:
    registry = load("tests.support.sample_migrations", use_entry_points=False)
    assert registry.target("counter") == 3
    assert registry.target("unknown-type") == 1
    assert registry.upgrade("counter", {"count": 4}, 1) == ({"total": 4, "unit": "items"}, 3)
    assert registry.upgrade("counter", {"total": 4}, 2) == ({"total": 4, "unit": "items"}, 3)
    current = {"total": 4, "unit": "m"}
    assert registry.upgrade("counter", current, 3) == (current, 3)
    assert not registry.needs_upgrade("counter", 3)
    assert registry.needs_upgrade("counter", 1)


def test_gaps_and_duplicates_are_refused() -> None:
    registry = MigrationRegistry()
    registry.add("t", 1, dict)
    registry.add("t", 3, dict)
    with pytest.raises(MigrationSetupError, match="skip schema version"):
        registry.check()
    with pytest.raises(MigrationSetupError, match="two state migrations"):
        registry.add("t", 1, dict)
    with pytest.raises(MigrationSetupError, match=">= 1"):
        registry.add("t", 0, dict)


def test_a_failing_or_misbehaving_migration_is_reported() -> None:
    registry = load("tests.support.sample_migrations", use_entry_points=False)
    with pytest.raises(MigrationFailed, match="'broken' from schema version 1 failed") as raised:
        registry.upgrade("broken", {}, 1, agent_id="b-1")
    assert raised.value.reason == "STATE_MIGRATION_FAILED"
    assert "b-1" in raised.value.message

    def not_an_object(document: dict[str, Any]) -> Any:
        return [document]

    registry = MigrationRegistry()
    registry.add("t", 1, not_an_object)
    with pytest.raises(MigrationFailed, match="returned list"):
        registry.upgrade("t", {}, 1)


def test_unknown_module_names_the_setting() -> None:
    with pytest.raises(MigrationSetupError, match="no_such_module"):
        load("no_such_module_for_stateward", use_entry_points=False)
