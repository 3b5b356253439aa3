"""The lookup index: token -> notice, and who hit what (a mixin of SqliteStore).

Tables (migration 7): ``lookup_notices`` gives each indexed notice a small
integer ``ref`` (so the index does not repeat 36-byte notice ids),
``lookup_tokens`` holds ``(token, ref)`` without a rowid, ``lookup_hits`` counts
each querier's hits per notice (what lets a querier send a reply.lookup_hit).

A new version replaces the notice's tokens; triggers drop them when the notice
closes (withdrawn, cancelled, expired) or its ciphertext is purged, in the
transaction that closes it, so no code path can forget to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from broker.core.lookup import IndexedNotice, lookup_leaf
from broker.store.api import DELIVERED, IN_FLIGHT, PENDING
from broker.store.sql import SqlBase
from broker.v1 import notice_pb2

if TYPE_CHECKING:
    from broker.v1 import audit_pb2

# SQLite's default limit of host parameters is 32766; stay well below it.
_CHUNK = 500


def _purpose(envelope: bytes) -> str:
    """The purpose in a stored envelope's signed header (verified when it was accepted)."""
    env = notice_pb2.Envelope.FromString(envelope)
    return notice_pb2.NoticeHeader.FromString(env.header.header_bytes).purpose


class LookupStoreMixin(SqlBase):
    if TYPE_CHECKING:

        def tlog_append(self, leaves: Sequence[audit_pb2.LogLeaf]) -> list[int]: ...

    def index_tokens(self, notice_id: str, version: int, tokens: Sequence[bytes]) -> None:
        """Make ``tokens`` the index entries of ``notice_id`` (replacing older versions')."""
        row = self.conn.execute(
            "SELECT ref, version FROM lookup_notices WHERE notice_id=?", (notice_id,)
        ).fetchone()
        if row is not None:
            if row[1] > version:
                return  # an older version arriving late never replaces a newer index
            self.conn.execute("DELETE FROM lookup_tokens WHERE ref=?", (row[0],))
            if not tokens:
                self.conn.execute("DELETE FROM lookup_notices WHERE ref=?", (row[0],))
                return
            self.conn.execute("UPDATE lookup_notices SET version=? WHERE ref=?", (version, row[0]))
            ref = int(row[0])
        elif not tokens:
            return
        else:
            cur = self.conn.execute(
                "INSERT INTO lookup_notices (notice_id, version) VALUES (?,?)", (notice_id, version)
            )
            ref = int(cur.lastrowid or 0)
        self.conn.executemany(
            "INSERT OR IGNORE INTO lookup_tokens (token, ref) VALUES (?,?)",
            [(t, ref) for t in tokens],
        )

    def indexed_tokens(self, notice_id: str) -> list[bytes]:
        """The tokens indexed for a notice, sorted (for tests and audits)."""
        rows = self.conn.execute(
            "SELECT t.token FROM lookup_tokens t JOIN lookup_notices n ON n.ref=t.ref "
            "WHERE n.notice_id=? ORDER BY t.token",
            (notice_id,),
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def index_size(self) -> int:
        """How many (token, notice) entries the index holds."""
        return int(self.conn.execute("SELECT COUNT(*) FROM lookup_tokens").fetchone()[0])

    def match_tokens(
        self, tokens: Sequence[bytes], querier: str, now_ms: int
    ) -> dict[int, list[IndexedNotice]]:
        """The notices each token matches, by position; suspended notices do not match."""
        positions: dict[bytes, list[int]] = {}
        for i, t in enumerate(tokens):
            positions.setdefault(t, []).append(i)
        found: dict[int, list[IndexedNotice]] = {}
        unique = list(positions)
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            rows = self.conn.execute(
                "SELECT t.token, n.notice_id, n.version FROM lookup_tokens t "
                "JOIN lookup_notices n ON n.ref=t.ref "
                f"WHERE t.token IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for token, notice_id, version in rows:
                hit = self._indexed(notice_id, version, querier, now_ms)
                if hit is not None:
                    for i in positions[bytes(token)]:
                        found.setdefault(i, []).append(hit)
        return found

    def _indexed(
        self, notice_id: str, version: int, querier: str, now_ms: int
    ) -> IndexedNotice | None:
        head = self.conn.execute(
            "SELECT originator, kind, envelope FROM notices WHERE notice_id=? AND version=?",
            (notice_id, version),
        ).fetchone()
        if head is None:
            return None
        state = self.conn.execute(
            "SELECT suspended_until_ms, closed FROM notice_state WHERE notice_id=?", (notice_id,)
        ).fetchone()
        if state is not None and (state[1] or state[0] > now_ms):
            return None
        held = 0
        if head[0] == querier:
            held = version
        else:
            row = self.conn.execute(
                "SELECT MAX(version) FROM deliveries WHERE notice_id=? AND recipient=? "
                "AND state IN (?,?,?)",
                (notice_id, querier, DELIVERED, IN_FLIGHT, PENDING),
            ).fetchone()
            held = int(row[0] or 0)
        return IndexedNotice(
            notice_id, version, str(head[0]), str(head[1]), held, _purpose(bytes(head[2]))
        )

    def record_lookup(
        self,
        querier: str,
        purpose: str,
        tokens: Sequence[bytes],
        hits: dict[int, list[IndexedNotice]],
        now_ms: int,
    ) -> int:
        """Count the querier's hits and append the lookup's log leaf; return its index."""
        for notice_id in sorted({n.notice_id for ns in hits.values() for n in ns}):
            self.conn.execute(
                "INSERT INTO lookup_hits VALUES (?,?,1,?,?) ON CONFLICT (querier, notice_id) "
                "DO UPDATE SET hits=lookup_hits.hits+1, last_at_ms=excluded.last_at_ms",
                (querier, notice_id, now_ms, now_ms),
            )
        leaf = lookup_leaf(
            querier=querier, purpose=purpose, tokens=tokens, hits=hits, logged_at_ms=now_ms
        )
        return self.tlog_append([leaf])[0]

    def has_lookup_hit(self, querier: str, notice_id: str) -> bool:
        """True when a lookup of ``querier`` has hit ``notice_id``."""
        row = self.conn.execute(
            "SELECT 1 FROM lookup_hits WHERE querier=? AND notice_id=?", (querier, notice_id)
        ).fetchone()
        return row is not None
