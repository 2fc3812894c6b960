"""Stateward storage: SQLAlchemy Core tables, migrations and the group-committing database."""

from stateward.storage.database import Database, EventDraft, WriteContext, expand, now_us
from stateward.storage.errors import DuplicateKey, StorageError, StorageFull, StorageUnavailable

__all__ = [
    "Database",
    "DuplicateKey",
    "EventDraft",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "WriteContext",
    "expand",
    "now_us",
]
