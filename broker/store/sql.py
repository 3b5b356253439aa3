"""The connection surface the store's SQL runs on, the same for every backend.

The store's statements are written once, in the SQLite dialect with `?`
placeholders (broker/store/sqlite.py and its mixins admin.py, lifecycle.py,
tlog.py). SQLite runs them as they are; PostgreSQL runs them through
:class:`broker.store.pgsql.PgConnection`, which has this same surface and
translates the few SQLite-only spellings.

Where the backends must differ in what a statement means, not only in how it
is spelled, the statement asks its store through the hooks of :class:`SqlBase`:
SQLite runs one writer at a time (BEGIN IMMEDIATE), so it needs no row locks;
PostgreSQL runs several transactions at once (several broker replicas, several
store workers) and locks the rows a statement reads in order to change them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol


class Cursor(Protocol):
    """What a statement returns: rows as tuples, and the key of the row it inserted."""

    @property
    def lastrowid(self) -> int | None: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of sqlite3.Connection the store uses (PgConnection has the same)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class SqlBase:
    """What every store mixin shares: the connection and the row-locking hooks.

    ``claim_rows(alias)`` ends a SELECT whose rows the statement's caller then
    takes for itself (leases, expiries): rows another transaction holds are
    skipped, never waited for, so two replicas never claim the same row.
    ``lock_rows(alias)`` ends a SELECT whose rows the caller then changes
    according to what it read (receipts, requeues, withholdings): it waits for
    the rows and reads their latest committed state. Both are empty for SQLite.
    """

    conn: Connection

    def claim_rows(self, alias: str) -> str:
        return ""

    def lock_rows(self, alias: str) -> str:
        return ""
