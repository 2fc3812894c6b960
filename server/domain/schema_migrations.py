"""Schema migrations of state documents, registered by operators in Python.

A migration upgrades one agent type's documents from ``from_version`` to
``from_version + 1``: ``fn(document: dict) -> dict``. The newest schema version of a
type is one past its highest registered migration (1 when it has none), and an older
document is upgraded by running each step in turn.

Operators register migrations from a module named in the ``state_migrations`` setting
and/or from packages that declare an entry point in the ``stateward.state_migrations``
group. Either way the loaded object is a module with a ``register(registry)`` function,
or that function itself::

    # my_migrations.py
    def register(registry):
        registry.add("support-bot", 1, rename_history)   # 1 -> 2
        registry.add("support-bot", 2, add_locale)       # 2 -> 3
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from stateward.server.domain.errors import FailedPrecondition

ENTRY_POINT_GROUP = "stateward.state_migrations"

Migration = Callable[[dict[str, Any]], dict[str, Any]]


class MigrationSetupError(ValueError):
    """The registered migrations are inconsistent or could not be loaded."""


PROBLEM_BYTES = 1000


def clip(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` UTF-8 bytes, marked "..." when cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: max(0, limit - 3)].decode(errors="ignore") + "..."


class MigrationFailed(FailedPrecondition):
    """A registered migration raised or returned something that is not a JSON object."""

    def __init__(
        self, agent_type: str, from_version: int, problem: str, *, agent_id: str = ""
    ) -> None:
        whose = f" (agent {agent_id!r})" if agent_id else ""
        problem = clip(problem, PROBLEM_BYTES)  # operator code's text: a page lists 1,000
        self.agent_id, self.from_version, self.problem = agent_id, from_version, problem
        super().__init__(
            f"the state migration of agent type {agent_type!r} from schema version "
            f"{from_version} failed{whose}: {problem}; fix the migration and retry",
            reason="STATE_MIGRATION_FAILED",
            subject=f"agents/{agent_id}" if agent_id else "",
            metadata={"agent_type": agent_type, "from_schema_version": str(from_version)},
        )


class MigrationRegistry:
    """Migrations per agent type and from-version."""

    def __init__(self) -> None:
        self._steps: dict[str, dict[int, Migration]] = {}
        self._targets: dict[str, int] = {}

    def add(self, agent_type: str, from_version: int, fn: Migration) -> None:
        """Register ``fn`` as the upgrade of ``agent_type`` documents from ``from_version``."""
        if not agent_type:
            raise MigrationSetupError("a state migration needs an agent type")
        if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
            raise MigrationSetupError(
                f"state migration for {agent_type!r}: from_version must be an integer >= 1, "
                f"got {from_version!r}"
            )
        if not callable(fn):
            raise MigrationSetupError(
                f"state migration for {agent_type!r} from {from_version} is not callable"
            )
        steps = self._steps.setdefault(agent_type, {})
        if from_version in steps:
            raise MigrationSetupError(
                f"two state migrations for {agent_type!r} from schema version {from_version}"
            )
        steps[from_version] = fn
        self._targets.pop(agent_type, None)

    def check(self) -> None:
        """Every type's chain must start at 1 and have no gaps."""
        for agent_type, steps in self._steps.items():
            missing = sorted(set(range(1, max(steps) + 1)) - set(steps))
            if missing:
                listed = ", ".join(str(m) for m in missing)
                raise MigrationSetupError(
                    f"state migrations for {agent_type!r} skip schema version(s) {listed}: "
                    f"register one migration from each version 1 to {max(steps)}"
                )

    def target(self, agent_type: str) -> int:
        """The newest schema version of ``agent_type`` (1 when it has no migrations)."""
        target = self._targets.get(agent_type)
        if target is None:
            steps = self._steps.get(agent_type)
            target = max(steps) + 1 if steps else 1
            self._targets[agent_type] = target
        return target

    def needs_upgrade(self, agent_type: str, schema_version: int) -> bool:
        return schema_version < self.target(agent_type)

    def upgrade(
        self, agent_type: str, document: dict[str, Any], schema_version: int, *, agent_id: str = ""
    ) -> tuple[dict[str, Any], int]:
        """Run every step from ``schema_version`` to the newest; returns (document, version)."""
        steps = self._steps.get(agent_type, {})
        version = schema_version
        while version in steps:
            try:
                document = steps[version](document)
            except (Exception, SystemExit) as error:  # operator code: never crash the server
                raise MigrationFailed(
                    agent_type, version, f"{type(error).__name__}: {error}", agent_id=agent_id
                ) from error
            if not isinstance(document, dict):
                raise MigrationFailed(
                    agent_type,
                    version,
                    f"it returned {type(document).__name__}, not a JSON object",
                    agent_id=agent_id,
                )
            version += 1
        return document, version

    def __bool__(self) -> bool:
        return bool(self._steps)


def _register_from(registry: MigrationRegistry, source: str, loaded: Any) -> None:
    register = getattr(loaded, "register", loaded)
    if not callable(register):
        raise MigrationSetupError(
            f"{source} has no register(registry) function to declare state migrations"
        )
    register(registry)


def load(module_name: str = "", *, use_entry_points: bool = True) -> MigrationRegistry:
    """A registry filled from the entry-point group and the module named in settings."""
    registry = MigrationRegistry()
    if use_entry_points:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = point.load()
            except Exception as error:
                raise MigrationSetupError(
                    f"cannot load state migrations from entry point {point.name!r} "
                    f"({point.value}): {error}"
                ) from error
            _register_from(registry, f"entry point {point.name!r}", loaded)
    if module_name:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise MigrationSetupError(
                f"cannot import state_migrations module {module_name!r}: {error}"
            ) from error
        _register_from(registry, f"module {module_name!r}", module)
    registry.check()
    return registry
