"""Schema migrations with Alembic, driven from code (no alembic.ini needed).

The server migrates on start unless told not to; ``stateward db upgrade`` runs the
same thing for operators who migrate separately. A database that is not migrated,
or that was migrated by newer code, is refused with a message saying what to do.
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


class SchemaMismatch(Exception):
    """The database schema does not match what this code expects."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("stateward.storage.migrations")))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every pending migration; refuse a database migrated by newer code."""
    _refuse_unknown(current_revision(engine))
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def _refuse_unknown(current: str | None) -> None:
    """A revision this code does not know was written by a newer Stateward."""
    scripts = ScriptDirectory.from_config(_config())
    known = {script.revision for script in scripts.walk_revisions()}
    if current is not None and current not in known:
        raise SchemaMismatch(
            f"the database is at revision {current}, newer than this Stateward "
            f"(head {scripts.get_current_head()}): upgrade Stateward before serving this database"
        )


def check(engine: Engine) -> None:
    """Raise SchemaMismatch unless the database is at this code's head revision."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaMismatch(
            "the database has no Stateward schema: run `stateward db upgrade` "
            "or start the server without --no-migrate"
        )
    _refuse_unknown(current)
    raise SchemaMismatch(
        f"the database is at revision {current}, behind this Stateward's {head}: "
        "run `stateward db upgrade` or start the server without --no-migrate"
    )
