"""The node's local inbox: which notices it has taken in, so the application
sees each (notice id, version) once however often the broker redelivers.

It keeps the sealed delivery (ciphertext), never the plaintext; a notice taken
in but not yet handed to the application (the process stopped in between) is
re-opened and handed over when the node starts again.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

_SCHEMA = """
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
);
"""


class Inbox:
    """SQLite file under the node's state directory (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA secure_delete=ON")  # erased means erased
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Run the writes inside as one transaction: one durable commit (fsync) for all of
        them; none of them if the block raises."""
        if self.conn.in_transaction:  # nested: the outer batch commits
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def take_in(
        self, notice_id: str, version: int, delivery: bytes, now_ms: int, *, handled: bool = False
    ) -> bool:
        """Record a verified delivery (durably when the batch commits); False if it was
        already there."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO inbox (notice_id, version, delivery, received_at_ms, handled) "
            "VALUES (?,?,?,?,?)",
            (notice_id, version, delivery, now_ms, int(handled)),
        )
        return cur.rowcount == 1

    def has(self, notice_id: str, version: int) -> bool:
        """True if this version was taken in before (a tombstone counts: erased stays out)."""
        row = self.conn.execute(
            "SELECT 1 FROM inbox WHERE notice_id=? AND version=?", (notice_id, version)
        ).fetchone()
        return row is not None

    def mark_handled(self, notice_id: str, version: int) -> None:
        self.conn.execute(
            "UPDATE inbox SET handled=1 WHERE notice_id=? AND version=?", (notice_id, version)
        )

    def delete(self, notice_id: str, below_version: int = 0) -> int:
        """Erase local copies of a notice (every version, or those below `below_version`);
        keep a tombstone so a late redelivery is not taken in again. Returns how many
        copies were erased."""
        cur = self.conn.execute(
            "UPDATE inbox SET delivery=x'', handled=1 WHERE notice_id=? AND delivery<>x'' "
            "AND (?=0 OR version<?)",
            (notice_id, below_version, below_version),
        )
        return cur.rowcount

    def held(self, notice_id: str) -> int:
        """How many versions of a notice this node still holds."""
        row = self.conn.execute(
            "SELECT COUNT(*) FROM inbox WHERE notice_id=? AND delivery<>x''", (notice_id,)
        ).fetchone()
        return int(row[0])

    def record_action(
        self, action_id: str, notice_id: str, kind: str, actor: str, reason: str, at_ms: int
    ) -> bool:
        """Remember a lifecycle action; False if it was already applied."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO actions VALUES (?,?,?,?,?,?)",
            (action_id, notice_id, kind, actor, reason, at_ms),
        )
        return cur.rowcount == 1

    def mark_handled_bytes(self, delivery: bytes) -> None:
        """Mark a stored delivery handled by its bytes (when it can no longer be opened)."""
        self.conn.execute("UPDATE inbox SET handled=1 WHERE delivery=?", (delivery,))

    def unhandled(self) -> list[bytes]:
        rows = self.conn.execute(
            "SELECT delivery FROM inbox WHERE handled=0 AND delivery<>x'' ORDER BY received_at_ms"
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def event_seen(self, seq: int) -> bool:
        cur = self.conn.execute("INSERT OR IGNORE INTO events (seq) VALUES (?)", (seq,))
        return cur.rowcount == 0
