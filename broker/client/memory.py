"""What a node has verified, kept in its state database so that no broker can roll it
back: not after a restart, not for a fresh `broker node` command.

For each agency the newest key statement serial and registry entry revision the node
accepted; the newest policy activation sequence; the newest log checkpoint it verified
(size, root, note). A lower one offered later is refused with a message naming both.
"""

from __future__ import annotations

import sqlite3

from broker.errors import PermissionDenied

KEY_SERIAL = "key_serial"
REVISION = "registry_revision"
POLICY = "policy_sequence"
CHECKPOINT = "checkpoint"

_WHAT = {
    KEY_SERIAL: "key serial",
    REVISION: "registry revision",
    POLICY: "policy activation",
}


class TrustMemory:
    """Monotonic counters per (what, subject), durable, cached in memory."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._cache: dict[tuple[str, str], int] = {
            (str(w), str(s)): int(v)
            for w, s, v in conn.execute("SELECT what, subject, value FROM trust")
        }

    def newest(self, what: str, subject: str = "") -> int:
        """The highest value accepted so far (0: none)."""
        return self._cache.get((what, subject), 0)

    def check(self, what: str, subject: str, value: int) -> None:
        """Refuse `value` if it is lower than one accepted before (PermissionDenied)."""
        newest = self.newest(what, subject)
        if value < newest:
            whose = f" for {subject}" if subject else ""
            name = _WHAT.get(what, what)
            raise PermissionDenied(
                f"the broker offered {name} {value}{whose}, but this node has already "
                f"accepted {name} {newest}: refusing to go back"
            )

    def accept(self, what: str, subject: str, value: int, detail: bytes = b"") -> None:
        """check(), then remember `value` durably if it is newer."""
        self.check(what, subject, value)
        if value > self.newest(what, subject) or detail:
            self.conn.execute(
                "INSERT INTO trust (what, subject, value, detail) VALUES (?,?,?,?) "
                "ON CONFLICT(what, subject) DO UPDATE SET value=excluded.value, "
                "detail=excluded.detail WHERE excluded.value >= trust.value",
                (what, subject, value, detail),
            )
            self._cache[(what, subject)] = max(value, self.newest(what, subject))

    def detail(self, what: str, subject: str = "") -> bytes:
        row = self.conn.execute(
            "SELECT detail FROM trust WHERE what=? AND subject=?", (what, subject)
        ).fetchone()
        return b"" if row is None else bytes(row[0])
