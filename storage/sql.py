"""Hot statements as plain SQL text, run straight on the driver's cursor.

A Core statement costs 40-60 µs of Python per execution (cache key, compile cache,
parameter processing, result wrapping) and ``exec_driver_sql`` still about 40; the
DBAPI cursor costs a few. The writer's per-write statements go through :func:`run`.

A statement is written once, with ``?`` placeholders, and rendered at import for both
drivers (sqlite3 takes ``?``, psycopg ``%s``). Driver errors come out wrapped as
SQLAlchemy's (``IntegrityError``, ``OperationalError``, ...), exactly as from
``conn.execute``, so ``errors.translate`` and the writer's rules see no difference; a
lost connection is invalidated so the pool does not hand it out again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc


class Sql:
    """One statement's text for each dialect.

    ``for_update`` appends ``FOR UPDATE`` on PostgreSQL only: SQLite has no row locks
    (its writer holds the whole database from ``BEGIN IMMEDIATE`` on).
    """

    __slots__ = ("sqlite", "postgresql")

    def __init__(self, text: str, *, for_update: bool = False) -> None:
        if "%" in text:
            raise ValueError("'%' would be read as a placeholder by psycopg; bind it instead")
        self.sqlite = text
        self.postgresql = text.replace("?", "%s") + (" FOR UPDATE" if for_update else "")

    def __repr__(self) -> str:
        return f"Sql({self.sqlite!r})"


def run(conn: Connection, sql: Sql, params: Sequence[Any] = ()) -> Any:
    """Execute ``sql`` on ``conn``'s DBAPI connection, in its current transaction.

    Returns the DBAPI cursor: ``fetchone()``/``fetchall()`` give plain tuples,
    ``rowcount`` the rows changed.
    """
    dialect = conn.dialect
    text = sql.postgresql if dialect.name == "postgresql" else sql.sqlite
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        cursor.execute(text, params)
    except dialect.loaded_dbapi.Error as error:
        lost = bool(dialect.is_disconnect(error, raw, cursor))
        if lost:
            conn.invalidate(error)
        raise sa_exc.DBAPIError.instance(
            text, params, error, dialect.loaded_dbapi.Error, connection_invalidated=lost
        ) from error
    return cursor
