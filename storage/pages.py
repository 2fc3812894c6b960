"""List pages that read no more than one response's worth of their big columns.

A page is read with one row more than it shows (that row tells that more follow), and
the service then keeps what fits in one response. For records with megabyte documents
that alone could read gigabytes: 1,001 task runs of four 1 MiB documents each. So the
wide listings stop reading once the rows' bytes pass the budget:

- SQLite hands rows over one at a time, so the read simply stops after the row whose
  estimate (its big columns, measured in Python, and ``ROW_BYTES``) passes the budget.
  (Where it must sort first, as for compensation steps ordered by completion time, it
  reads every matching row from disk before the first comes out; memory stays bounded.)
- psycopg receives a whole result at once, so PostgreSQL first answers a query for the
  rows' sizes (``octet_length`` of the big columns, which it takes from each value's
  header without reading the value), and the rows are read up to the one that passes.

A read stopped that way is ``cut``: it may lack the extra row, and on PostgreSQL (reads
in autocommit) rows may come or go between the two queries, so the service pages on
after the last row it keeps whatever that row weighs (``paging.page_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Column, ColumnElement, Connection, Select, func

T = TypeVar("T")

ROW_BYTES = 160
"""A row's bytes besides its big columns: the fixed part every record's weight has
(``paging.RECORD_BYTES``), so that an estimate stays at or below the exact weight when
the big columns are measured in bytes. A page of whole steps (GetCompensationPlan with
page_size 0) relies on it: a read cut by the estimate cannot have fit."""


class Rows(list[T]):
    """The rows read for a page; ``cut`` when the read stopped at the budget."""

    cut = False


class Sizes:
    """A row's big columns, and the SQL that sums their sizes on PostgreSQL."""

    def __init__(self, *columns: Column[Any]) -> None:
        self.names = [column.name for column in columns]
        parts = [func.coalesce(func.octet_length(column), 0) for column in columns]
        total: ColumnElement[int] = parts[0]
        for part in parts[1:]:
            total = total + part
        self.sql = total

    def of(self, row: Any) -> int:
        """The big columns' size in a row read in full (characters of text)."""
        values = row._mapping
        return sum(len(values[name] or b"") for name in self.names)


def read(
    conn: Connection,
    query: Select[Any],
    sizes: Sizes,
    limit: int,
    budget: int | None,
    convert: Callable[[Any], T],
) -> Rows[T]:
    """The first ``limit`` rows of ``query`` (filtered and ordered) as records, or, with a
    ``budget``, those up to and including the one whose bytes pass it (then ``cut``)."""
    if budget is None:
        return Rows(convert(row) for row in conn.execute(query.limit(limit)))
    if conn.dialect.name != "postgresql":
        return _streamed(conn, query.limit(limit), sizes, budget, convert)
    count, cut = _rows_to_read(conn, query.with_only_columns(sizes.sql), limit, budget)
    rows = Rows(convert(row) for row in conn.execute(query.limit(count)))
    if cut and not rows:  # the measured rows went in between: look once more
        rows = Rows(convert(row) for row in conn.execute(query.limit(1)))
    rows.cut = cut and bool(rows)  # still none: the listing is over
    return rows


def _streamed(
    conn: Connection, query: Select[Any], sizes: Sizes, budget: int, convert: Callable[[Any], T]
) -> Rows[T]:
    rows: Rows[T] = Rows()
    used = 0
    result = conn.execute(query)
    try:
        for row in result:  # one at a time: sqlite3 steps the statement per row
            rows.append(convert(row))
            used += ROW_BYTES + sizes.of(row)
            if used > budget:
                rows.cut = result.fetchone() is not None
                break
    finally:
        result.close()
    return rows


def _rows_to_read(
    conn: Connection, probe: Select[Any], limit: int, budget: int
) -> tuple[int, bool]:
    """How many rows to read, and whether that stops short of rows that follow. When the
    budget passes at the last row there is, the read asks for ``limit`` rows anyway: a
    row inserted before it in the meantime then still shows as the extra one."""
    used = 0
    measured = iter(conn.execute(probe.limit(limit)).all())
    for count, (size,) in enumerate(measured, 1):
        used += ROW_BYTES + (size or 0)
        if used > budget:
            if next(measured, None) is None:
                return limit, False
            return count, True
    return limit, False
