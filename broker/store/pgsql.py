"""The store's SQL on PostgreSQL: a connection with sqlite3's surface (psycopg 3).

The store's statements are written once, in SQLite's dialect. `translate` turns
one into PostgreSQL's, once per distinct text (cached):

* ``?`` placeholders become ``%s`` (and a literal ``%`` becomes ``%%``);
* ``INSERT OR IGNORE INTO t ...`` becomes ``INSERT INTO t ... ON CONFLICT DO NOTHING``;
* ``x'0a1b'`` blob literals become ``'\\x0a1b'::bytea``;
* an ``INSERT`` into a table keyed by an identity column gets ``RETURNING seq``,
  which is how `Cursor.lastrowid` is answered;
* ``INSERT OR REPLACE`` and ``PRAGMA`` have no translation and are refused.

Everything else (upserts with ``ON CONFLICT ... DO UPDATE``, ``excluded.``,
``COALESCE``, ``LIMIT``, savepoints) is already the same in both dialects.

One more rule is PostgreSQL's alone, because several transactions run at once
there (several replicas, several store workers) where SQLite runs one writer at a
time. The transparency log's appends and the tables it catches up with by cursor
must be written in one order by everyone: a statement that touches
``tlog_leaves``, ``tlog_checkpoints``, ``tlog_cursors``, ``tlog_registry`` or
``policy_activations``, or inserts into ``events``, first takes the log's
transaction-scoped advisory lock (`SEQUENCER`), held until COMMIT or ROLLBACK.
Appends therefore see every earlier append, event numbers are handed out in
commit order (the log's events cursor never skips one), and there is no
long-lived sequencer to elect: if the holder dies, its connection drops and
PostgreSQL releases the lock with the transaction.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from broker.store.runner import RetryBatch

# Tables keyed by an identity column: INSERTs return it (for lastrowid).
IDENTITY_KEYS = {
    "admin_actions": "seq",
    "controls": "seq",
    "deliveries": "seq",
    "events": "seq",
    "lookup_notices": "ref",
    "policy_activations": "seq",
}
_ORDERED = re.compile(
    r"\b(tlog_leaves|tlog_checkpoints|tlog_cursors|tlog_registry|policy_activations)\b"
    r"|^\s*INSERT\s+INTO\s+events\b",
    re.IGNORECASE,
)
_INSERT = re.compile(r"^\s*INSERT\s+(OR\s+(\w+)\s+)?INTO\s+(\w+)", re.IGNORECASE)
_REFUSED = re.compile(r"^\s*PRAGMA\b", re.IGNORECASE)
_HEX = re.compile(r"[0-9a-fA-F]*")


@dataclass(frozen=True)
class Translated:
    sql: str  # PostgreSQL's text, with %s placeholders
    returning: bool  # ends in RETURNING <identity key>: the cursor's lastrowid
    ordered: bool  # takes the log's advisory lock first


def _placeholders(sql: str) -> str:
    """`?` -> `%s` outside string literals, `%` -> `%%` everywhere, x'..' -> bytea."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "'":
            end = i + 1
            while end < n:
                if sql[end] == "'":
                    if end + 1 < n and sql[end + 1] == "'":
                        end += 2
                        continue
                    break
                end += 1
            if end >= n:
                raise ValueError(f"unterminated string literal in SQL: {sql!r}")
            out.append(sql[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif (
            ch in "xX"
            and i + 1 < n
            and sql[i + 1] == "'"
            and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_"))
        ):
            end = sql.find("'", i + 2)
            digits = sql[i + 2 : end] if end > 0 else ""
            if end < 0 or not _HEX.fullmatch(digits) or len(digits) % 2:
                raise ValueError(f"malformed blob literal in SQL: {sql!r}")
            out.append(f"'\\x{digits}'::bytea")
            i = end + 1
        elif ch == "?":
            out.append("%s")
            i += 1
        elif ch == "%":
            out.append("%%")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@functools.lru_cache(maxsize=2048)
def translate(sql: str, *, many: bool = False) -> Translated:
    """PostgreSQL's form of one of the store's statements (see the module docstring).

    Raises ValueError for SQLite spellings with no translation.
    """
    if _REFUSED.match(sql):
        raise ValueError(f"no PostgreSQL translation for: {sql.strip()[:60]}")
    text = _placeholders(sql)
    returning = False
    insert = _INSERT.match(text)
    if insert is not None:
        verb, table = (insert.group(2) or "").upper(), insert.group(3).lower()
        if verb not in ("", "IGNORE"):
            raise ValueError(f"no PostgreSQL translation for INSERT OR {verb}: use an upsert")
        text = text.rstrip().rstrip(";")
        if verb == "IGNORE":
            text = _INSERT.sub(lambda m: f"INSERT INTO {m.group(3)}", text, count=1)
            text += " ON CONFLICT DO NOTHING"
        key = IDENTITY_KEYS.get(table)
        if key is not None and not many and "RETURNING" not in text.upper():
            text += f" RETURNING {key}"
            returning = True
    return Translated(text, returning, bool(_ORDERED.search(sql)))


def retryable(exc: BaseException) -> bool:
    """True when PostgreSQL undid the whole transaction and running it again may succeed:
    a deadlock or serialization failure (SQLSTATE class 40), a unique key another
    transaction took first (23505: the retry sees its row), or a connection that broke
    or was shut down (class 08, 57P01-57P03, or no SQLSTATE at all)."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state[:2] in ("40", "08") or state in ("23505", "57P01", "57P02", "57P03")


class PgCursor:
    """sqlite3.Cursor's surface over a psycopg cursor."""

    def __init__(self, cursor: psycopg.Cursor[Any], lastrowid: int | None) -> None:
        self._cursor = cursor
        self._lastrowid = lastrowid

    @property
    def lastrowid(self) -> int | None:
        return self._lastrowid

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """One transaction's connection: sqlite3.Connection's execute/executemany surface.

    `sequencer_key` is the log's advisory lock (see the module docstring). The
    lock is taken at most once per transaction; `depth` follows savepoints,
    since rolling back to a savepoint releases a lock taken inside it.

    Transaction control (BEGIN, SAVEPOINT, RELEASE, COMMIT, the advisory lock) is
    `defer`red and sent with the next round trip, several commands in one simple
    query: a one-operation group costs two round trips of its own, not five. None
    of these commands can fail for what an operation did, so sending one a little
    later changes nothing but the wait.
    """

    def __init__(self, raw: psycopg.Connection[Any], sequencer_key: int) -> None:
        self.raw = raw
        self.sequencer_key = sequencer_key
        self.depth = 0
        self._sequenced_at: int | None = None  # savepoint depth the lock was taken at
        self._deferred: list[str] = []

    @property
    def sequenced(self) -> bool:
        return self._sequenced_at is not None

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> PgCursor:
        t = translate(sql)
        self._sequence(t)
        self.flush()
        cur = self._run(lambda c: c.execute(t.sql, tuple(parameters)))
        lastrowid = None
        if t.returning:
            row = cur.fetchone()
            lastrowid = None if row is None else int(row[0])
        return PgCursor(cur, lastrowid)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> PgCursor:
        t = translate(sql, many=True)
        rows = [tuple(p) for p in parameters]
        if not rows:
            return PgCursor(self.raw.cursor(), None)
        self._sequence(t)
        self.flush()
        return PgCursor(self._run(lambda c: c.executemany(t.sql, rows)), None)

    def defer(self, command: str) -> None:
        """Send a parameterless command of the connection's own with the next round trip."""
        self._deferred.append(command)

    def flush(self) -> None:
        """Send the deferred commands now (one simple query)."""
        if self._deferred:
            text, self._deferred = "; ".join(self._deferred), []
            self._run(lambda c: c.execute(text), binary=False)

    def discard(self) -> None:
        self._deferred = []

    def _sequence(self, t: Translated) -> None:
        if t.ordered and self._sequenced_at is None:
            self.defer(f"SELECT pg_advisory_xact_lock({int(self.sequencer_key)})")
            self._sequenced_at = self.depth

    def _run(
        self, fn: Callable[[psycopg.Cursor[Any]], object], *, binary: bool = True
    ) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor(binary=binary)
        try:
            fn(cur)
        except psycopg.Error as exc:
            if retryable(exc):
                raise RetryBatch(f"{type(exc).__name__}: {exc}") from exc
            raise
        return cur

    # -- savepoints: where the advisory lock was taken --------------------------------------
    def opened_savepoint(self) -> None:
        self.depth += 1

    def released_savepoint(self) -> None:
        if self._sequenced_at is not None and self._sequenced_at >= self.depth:
            self._sequenced_at = self.depth - 1  # the lock now belongs to the parent
        self.depth -= 1

    def rolled_back_savepoint(self) -> None:
        if self._sequenced_at is not None and self._sequenced_at >= self.depth:
            self._sequenced_at = None  # PostgreSQL released it with the savepoint
        self.depth -= 1
