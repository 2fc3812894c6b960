"""List pages that read no more than one response's worth of their big columns.

A page is read with one row more than it shows (that row tells that more follow), and
the service then keeps what fits in one response. For records with megabyte documents
that alone could read gigabytes: 1,001 task runs of four 1 MiB documents each. So the
wide listings first read their rows' sizes (``length`` of the big columns: for a blob
neither database reads the value to answer it; the text columns, labels and error
messages, are small), and then only the rows up to the one whose bytes pass the budget.
Small records cost one more, cheap query.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Select, func

ROW_BYTES = 1024
"""A row's bytes besides its big columns, about: ids, names, numbers."""


def sizes(*columns: Column[Any]) -> ColumnElement[int]:
    """The summed length of ``columns`` (bytes of blobs, characters of text)."""
    total: ColumnElement[int] = func.coalesce(func.length(columns[0]), 0)
    for column in columns[1:]:
        total = total + func.coalesce(func.length(column), 0)
    return total


def rows_to_read(
    conn: Connection, query: Select[Any], size: ColumnElement[int], limit: int, budget: int
) -> int:
    """How many of the first ``limit`` rows of ``query`` (filtered and ordered) to read:
    all of them, or up to and including the one whose bytes pass ``budget``."""
    used = 0
    for count, bytes_ in enumerate(conn.execute(query.with_only_columns(size).limit(limit)), 1):
        used += ROW_BYTES + (bytes_[0] or 0)
        if used > budget:
            return count
    return limit
