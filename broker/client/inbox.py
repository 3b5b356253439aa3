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

from broker.client.statedb import open_state, transaction

# The sweep's two queries, each answered from a partial index (statedb migrations 2 and 4)
# whose condition it repeats word for word: SQLite uses a partial index only for a query
# whose WHERE implies the index's. A copy past both deadlines is listed once.
DUE_RELEASES_SQL = (
    "SELECT delivery FROM inbox WHERE release_at_ms > 0 AND handled = 0 AND delivery <> x'' "
    "AND release_at_ms<=? ORDER BY release_at_ms"
)
DUE_ERASURES_SQL = (
    "SELECT notice_id, version, expires_at_ms, erase_at_ms FROM inbox "
    "WHERE expires_at_ms > 0 AND delivery <> x'' AND expires_at_ms<=? "
    "UNION "
    "SELECT notice_id, version, expires_at_ms, erase_at_ms FROM inbox "
    "WHERE erase_at_ms > 0 AND delivery <> x'' AND erase_at_ms<=?"
)


class Inbox:
    """The inbox tables of the node's state database (broker/client/statedb.py)."""

    def __init__(self, path_or_conn: Path | sqlite3.Connection) -> None:
        self.conn = (
            path_or_conn
            if isinstance(path_or_conn, sqlite3.Connection)
            else open_state(path_or_conn)
        )

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Run the writes inside as one transaction: one durable commit (fsync) for all of
        them; none of them if the block raises."""
        with transaction(self.conn):
            yield

    def take_in(
        self,
        notice_id: str,
        version: int,
        delivery: bytes,
        now_ms: int,
        *,
        handled: bool = False,
        expires_at_ms: int = 0,
        release_at_ms: int = 0,
        erase_at_ms: int = 0,
    ) -> bool:
        """Record a verified delivery (durably when the batch commits); False if it was
        already there. `expires_at_ms` is its signed expiry, `release_at_ms` when an embargo
        lets it reach the application (0: at once, as `handled` says), `erase_at_ms` when a
        maximum retention obligation erases it (0: none)."""
        if expires_at_ms > 0:
            row = self.conn.execute(
                "SELECT until_ms FROM extensions WHERE notice_id=?", (notice_id,)
            ).fetchone()
            if row is not None:
                expires_at_ms = max(expires_at_ms, int(row[0]))
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO inbox (notice_id, version, delivery, received_at_ms, handled, "
            "expires_at_ms, release_at_ms, erase_at_ms) VALUES (?,?,?,?,?,?,?,?)",
            (
                notice_id,
                version,
                delivery,
                now_ms,
                int(handled),
                expires_at_ms,
                release_at_ms,
                erase_at_ms,
            ),
        )
        return cur.rowcount == 1

    def versions(self, notice_id: str) -> list[int]:
        """Every version of a notice this node took in (erased ones too: a tombstone)."""
        rows = self.conn.execute(
            "SELECT version FROM inbox WHERE notice_id=? ORDER BY version", (notice_id,)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def held_versions(self, notice_id: str) -> list[int]:
        rows = self.conn.execute(
            "SELECT version FROM inbox WHERE notice_id=? AND delivery<>x'' ORDER BY version",
            (notice_id,),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def closed(self, notice_id: str) -> str | None:
        """Why a notice is closed for good here (withdrawn, cancelled, expired), or None."""
        row = self.conn.execute("SELECT why FROM closed WHERE notice_id=?", (notice_id,)).fetchone()
        return None if row is None else str(row[0])

    def close_notice(self, notice_id: str, why: str, action_id: str, at_ms: int) -> None:
        """Close a notice for good: erase every copy, and refuse it from now on."""
        self.delete(notice_id, why=why)
        self.conn.execute(
            "INSERT OR IGNORE INTO closed (notice_id, why, action_id, at_ms) VALUES (?,?,?,?)",
            (notice_id, why, action_id, at_ms),
        )

    def expiry(self, notice_id: str) -> int:
        """The notice's signed expiry as this node knows it (with signed extensions); 0: none."""
        row = self.conn.execute(
            "SELECT MAX(expires_at_ms) FROM inbox WHERE notice_id=?", (notice_id,)
        ).fetchone()
        return int(row[0] or 0)

    def extend(self, notice_id: str, until_ms: int) -> None:
        """A signed extension: the notice now expires at `until_ms` (also for copies that
        arrive after the extension)."""
        self.conn.execute(
            "INSERT INTO extensions (notice_id, until_ms) VALUES (?,?) ON CONFLICT (notice_id) "
            "DO UPDATE SET until_ms=MAX(until_ms, excluded.until_ms)",
            (notice_id, until_ms),
        )
        self.conn.execute(
            "UPDATE inbox SET expires_at_ms=? WHERE notice_id=? AND expires_at_ms<?",
            (until_ms, notice_id, until_ms),
        )

    def due_releases(self, now_ms: int) -> list[bytes]:
        """Held deliveries whose embargo has ended (not yet handed to the application)."""
        rows = self.conn.execute(DUE_RELEASES_SQL, (now_ms,)).fetchall()
        return [bytes(r[0]) for r in rows]

    def due_erasures(self, now_ms: int) -> list[tuple[str, int, str]]:
        """(notice id, version, why) of copies past their signed expiry or retention."""
        rows = self.conn.execute(DUE_ERASURES_SQL, (now_ms, now_ms)).fetchall()
        return [
            (
                r[0],
                int(r[1]),
                "retention" if r[3] and r[3] <= now_ms and (not r[2] or r[3] < r[2]) else "expired",
            )
            for r in rows
        ]

    def erase(self, notice_id: str, version: int, why: str) -> int:
        cur = self.conn.execute(
            "UPDATE inbox SET delivery=x'', handled=1, erased=? WHERE notice_id=? AND version=? "
            "AND delivery<>x''",
            (why, notice_id, version),
        )
        return cur.rowcount

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

    def delete(self, notice_id: str, below_version: int = 0, *, why: str = "deleted") -> int:
        """Erase local copies of a notice (every version, or those below `below_version`);
        keep a tombstone so a late redelivery is not taken in again. Returns how many
        copies were erased."""
        cur = self.conn.execute(
            "UPDATE inbox SET delivery=x'', handled=1, erased=? WHERE notice_id=? "
            "AND delivery<>x'' AND (?=0 OR version<?)",
            (why, notice_id, below_version, below_version),
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

    def unhandled(self, now_ms: int | None = None) -> list[bytes]:
        """Deliveries taken in but not handed to the application (none still embargoed)."""
        rows = self.conn.execute(
            "SELECT delivery FROM inbox WHERE handled=0 AND delivery<>x'' "
            "AND (? IS NULL OR release_at_ms<=?) ORDER BY received_at_ms",
            (now_ms, now_ms),
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def event_seen(self, seq: int) -> bool:
        cur = self.conn.execute("INSERT OR IGNORE INTO events (seq) VALUES (?)", (seq,))
        return cur.rowcount == 0
