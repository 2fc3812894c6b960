"""List pages that read no more than one response's worth of their big columns.

A page is read with one row more than it shows (that row tells that more follow), and
the service then keeps what fits in one response. For records with megabyte documents
that alone could read gigabytes: 1,001 task runs of four 1 MiB documents each. So the
wide listings first read their rows' sizes, then only the rows up to the one whose
bytes pass the budget. Small records cost one more, cheap query.

A read stopped that way is ``cut``: it may lack the extra row, and on PostgreSQL (reads
in autocommit) rows may have come or gone between the two queries, so the service pages
on after the last row it keeps whatever that row's weight (``Rows.cut``).

The sizes are ``octet_length`` of the blob and text columns on PostgreSQL, which reads
neither (a stored value's length is in its header). SQLite answers ``length`` of a blob
from the record header too, but must read a text value to count it, and reaching a text
column stored after a large blob reads through the blob; so on SQLite the text columns
(labels, error messages: at most ~150 KB a row) are left out of the estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Column, ColumnElement, Connection, Select, func

T = TypeVar("T")

ROW_BYTES = 512
"""A row's bytes besides the estimated columns, about: ids, names, numbers."""


class Rows(list[T]):
    """The rows read for a page; ``cut`` when the read stopped at the budget."""

    cut = False


class Sizes:
    """The summed size of a row's big columns, as each dialect can tell it cheaply."""

    def __init__(self, blobs: Sequence[Column[Any]], texts: Sequence[Column[Any]] = ()) -> None:
        self.postgresql = _total(func.octet_length, [*blobs, *texts])
        self.sqlite = _total(func.length, blobs)

    def of(self, conn: Connection) -> ColumnElement[int]:
        return self.postgresql if conn.dialect.name == "postgresql" else self.sqlite


def _total(length: Any, columns: Sequence[Column[Any]]) -> ColumnElement[int]:
    parts = [func.coalesce(length(column), 0) for column in columns]
    total: ColumnElement[int] = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def read(
    conn: Connection,
    query: Select[Any],
    sizes: Sizes,
    limit: int,
    budget: int | None,
    convert: Any,
) -> Rows[Any]:
    """The first ``limit`` rows of ``query`` (filtered and ordered) as records, or, with a
    ``budget``, those up to and including the one whose bytes pass it (then ``cut``)."""
    count, cut = limit, False
    if budget is not None:
        count, cut = _rows_to_read(conn, query.with_only_columns(sizes.of(conn)), limit, budget)
    rows: Rows[Any] = Rows(convert(row) for row in conn.execute(query.limit(count)))
    if cut and not rows:  # the probed rows went in between (PostgreSQL): look once more
        rows = Rows(convert(row) for row in conn.execute(query.limit(1)))
    rows.cut = cut and bool(rows)  # still none: the listing is over
    return rows


def _rows_to_read(
    conn: Connection, probe: Select[Any], limit: int, budget: int
) -> tuple[int, bool]:
    """How many rows to read, and whether that stops short of rows that follow."""
    used = 0
    sizes = iter(conn.execute(probe.limit(limit)).all())
    for count, (size,) in enumerate(sizes, 1):
        used += ROW_BYTES + (size or 0)
        if used > budget:
            return count, next(sizes, None) is not None
    return limit, False
