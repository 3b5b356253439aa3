"""The node's state database: one SQLite file per agency under the node's state directory.

It holds what the node must remember across restarts and separate CLI invocations:
the inbox of sealed deliveries and tombstones (broker/client/inbox.py), what the node
has verified of the other agencies and of the log (broker/client/memory.py: key
serials, registry revisions, policy activations, checkpoints), and the audiences it
sealed its own notices for (broker/client/sent.py). WAL, synchronous=FULL,
secure_delete; the schema is versioned (PRAGMA user_version) and migrated on open.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from broker.errors import InvalidArgument

MIGRATIONS: tuple[str, ...] = (
    # 1: the inbox as it was before versioning (IF NOT EXISTS: older files already have it)
    """
    CREATE TABLE IF NOT EXISTS inbox (
        notice_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        delivery BLOB NOT NULL,
        received_at_ms INTEGER NOT NULL,
        handled INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (notice_id, version)
    );
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY
    );
    CREATE TABLE IF NOT EXISTS actions (
        action_id TEXT PRIMARY KEY,
        notice_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    )
    """,
    # 2: what the node verified (memory.py), what it sealed (sent.py), the signed expiry,
    # embargo and retention of what it holds, notices closed for good, and findings
    """
    CREATE TABLE trust (
        what TEXT NOT NULL,
        subject TEXT NOT NULL,
        value INTEGER NOT NULL,
        detail BLOB NOT NULL DEFAULT x'',
        PRIMARY KEY (what, subject)
    );
    CREATE TABLE sent (
        notice_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL,
        header_digest BLOB NOT NULL,
        audience TEXT NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        log_index INTEGER NOT NULL DEFAULT -1,
        logged INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (notice_id, version)
    );
    ALTER TABLE inbox ADD COLUMN expires_at_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE inbox ADD COLUMN release_at_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE inbox ADD COLUMN erase_at_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE inbox ADD COLUMN erased TEXT NOT NULL DEFAULT '';
    CREATE TABLE closed (
        notice_id TEXT PRIMARY KEY,
        why TEXT NOT NULL,
        action_id TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE TABLE findings (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        notice_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE INDEX inbox_due ON inbox (erase_at_ms) WHERE erase_at_ms > 0 AND delivery <> x''
    """,
    # 3: signed extensions of a notice's expiry, kept apart from the copies held (an
    # extension that arrives before the notice itself still applies to it); the
    # originator's lifecycle actions (what it signed, and for whom); the receipts it
    # verified (verified once: a later key rotation does not undo it)
    """
    CREATE TABLE extensions (
        notice_id TEXT PRIMARY KEY,
        until_ms INTEGER NOT NULL
    );
    CREATE TABLE acts (
        action_id TEXT PRIMARY KEY,
        notice_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        digest BLOB NOT NULL,
        audience TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE INDEX acts_notice ON acts (notice_id);
    CREATE TABLE verified (
        notice_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        recipient TEXT NOT NULL,
        action_id TEXT NOT NULL,
        log_index INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        PRIMARY KEY (notice_id, version, recipient, action_id)
    )
    """,
    # 4: the once-a-second sweep finds due expiries and embargo releases by index; without
    # these it read every row of the inbox, delivery bytes included, each second (a cost
    # that grew with everything the node ever took in)
    """
    CREATE INDEX inbox_expiry ON inbox (expires_at_ms)
        WHERE expires_at_ms > 0 AND delivery <> x'';
    CREATE INDEX inbox_release ON inbox (release_at_ms)
        WHERE release_at_ms > 0 AND handled = 0 AND delivery <> x''
    """,
)


def open_state(path: Path) -> sqlite3.Connection:
    """Open (creating and migrating) the node state database at `path`.

    Raises InvalidArgument when the file was written by a newer SDK.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")  # erased means erased
        conn.execute("PRAGMA busy_timeout=5000")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations the file lacks, one transaction each. The version is read
    again under the write lock: two processes of one agency (a listener and a CLI call)
    may open the file at once, and only one of them applies each step."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _version(conn, path)
            if current == len(MIGRATIONS):
                conn.execute("COMMIT")
                return
            for statement in MIGRATIONS[current].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={current + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _version(conn: sqlite3.Connection, path: Path) -> int:
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > len(MIGRATIONS):
        raise InvalidArgument(
            f"node state {path} has schema {current}, newer than this SDK "
            f"({len(MIGRATIONS)}): upgrade the SDK"
        )
    return current


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the writes inside as one transaction: one durable commit (fsync) for all of
    them; none of them if the block raises. Nested in an open transaction, it joins it."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
