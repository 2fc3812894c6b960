"""Storage errors: database failures translated at one boundary.

    StorageError
     +-- StorageUnavailable   the database cannot be reached or refused the work
     +-- StorageFull          the disk or a quota is full; reads may still work
     +-- DuplicateKey         a unique key already exists (a lost insert race)

The original driver exception is kept as ``__cause__``.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc


class StorageError(Exception):
    """Base of every error the storage layer raises on its own account."""


class StorageUnavailable(StorageError):
    """The database is unreachable, shutting down, or timed out."""


class StorageFull(StorageError):
    """No space left to write."""


class DuplicateKey(StorageError):
    """An insert hit an existing unique key."""


_FULL_MARKERS = ("database or disk is full", "no space left", "could not extend file", "disk full")


def translate(error: BaseException) -> BaseException:
    """Map a SQLAlchemy/driver error to a storage error; others pass through."""
    if isinstance(error, StorageError) or not isinstance(error, sa_exc.SQLAlchemyError):
        return error
    text = str(error).lower()
    if any(marker in text for marker in _FULL_MARKERS):
        return StorageFull("the database has no space left to write")
    orig = getattr(error, "orig", None)
    if isinstance(error, sa_exc.IntegrityError):
        return DuplicateKey(str(orig) if orig else str(error))
    return StorageUnavailable(f"database error: {type(orig or error).__name__}")
