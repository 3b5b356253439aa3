"""What an originator sealed: the audience of each notice version it published, from its
own wraps, so delivery status and the expiry and withdrawal reports are checked against
what the originator signed for, never against the broker's rows."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from broker.client.statedb import transaction


@dataclass(frozen=True)
class Sent:
    notice_id: str
    version: int
    kind: str
    header_digest: bytes
    audience: Mapping[str, tuple[str, ...]]  # recipient -> sections sealed for it
    sent_at_ms: int
    expires_at_ms: int
    log_index: int = -1  # where the broker said it logged the publication (-1: not said)
    logged: bool = False  # the node verified that leaf's inclusion in a checkpoint


class SentLog:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def record(self, items: Iterable[Sent]) -> None:
        """Remember sealed notices, in one transaction (one commit per Publish call)."""
        rows = [
            (
                s.notice_id,
                s.version,
                s.kind,
                s.header_digest,
                json.dumps({r: list(v) for r, v in sorted(s.audience.items())}),
                s.sent_at_ms,
                s.expires_at_ms,
                s.log_index,
            )
            for s in items
        ]
        if not rows:
            return
        with transaction(self.conn):
            self.conn.executemany(
                "INSERT OR IGNORE INTO sent (notice_id, version, kind, header_digest, audience, "
                "sent_at_ms, expires_at_ms, log_index) VALUES (?,?,?,?,?,?,?,?)",
                rows,
            )

    def get(self, notice_id: str, version: int = 0) -> list[Sent]:
        """The versions sealed of a notice (every one for version 0), oldest first."""
        rows = self.conn.execute(
            "SELECT notice_id, version, kind, header_digest, audience, sent_at_ms, "
            "expires_at_ms, log_index, logged FROM sent WHERE notice_id=? AND (?=0 OR version=?) "
            "ORDER BY version",
            (notice_id, version, version),
        ).fetchall()
        return [
            Sent(
                r[0],
                int(r[1]),
                r[2],
                bytes(r[3]),
                {k: tuple(v) for k, v in json.loads(r[4]).items()},
                int(r[5]),
                int(r[6]),
                int(r[7]),
                bool(r[8]),
            )
            for r in rows
        ]

    def unlogged(self, limit: int = 256) -> list[Sent]:
        rows = self.conn.execute(
            "SELECT notice_id, version FROM sent WHERE logged=0 AND log_index>=0 "
            "ORDER BY sent_at_ms LIMIT ?",
            (limit,),
        ).fetchall()
        return [s for n, v in rows for s in self.get(n, v)]

    def mark_logged(self, notice_id: str, version: int) -> None:
        self.conn.execute(
            "UPDATE sent SET logged=1 WHERE notice_id=? AND version=?", (notice_id, version)
        )


@dataclass(frozen=True)
class Act:
    """A lifecycle action this node signed, and who must acknowledge it."""

    action_id: str
    notice_id: str
    kind: str
    digest: bytes  # SHA-256 of the signed bytes: what an acknowledgement names
    audience: tuple[str, ...]
    at_ms: int


@dataclass(frozen=True)
class VerifiedReceipt:
    notice_id: str
    version: int
    recipient: str
    action_id: str  # "" for a delivery receipt
    log_index: int  # its leaf in the log (-1: acknowledgements are logged by digest only)
    received_at_ms: int


class ActLog:
    """The originator's lifecycle actions and the receipts it verified (sent.py's tables)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def record(self, act: Act) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO acts (action_id, notice_id, kind, digest, audience, at_ms) "
            "VALUES (?,?,?,?,?,?)",
            (
                act.action_id,
                act.notice_id,
                act.kind,
                act.digest,
                json.dumps(list(act.audience)),
                act.at_ms,
            ),
        )

    def of(self, notice_id: str) -> list[Act]:
        rows = self.conn.execute(
            "SELECT action_id, notice_id, kind, digest, audience, at_ms FROM acts "
            "WHERE notice_id=? ORDER BY at_ms",
            (notice_id,),
        ).fetchall()
        return [
            Act(r[0], r[1], r[2], bytes(r[3]), tuple(json.loads(r[4])), int(r[5])) for r in rows
        ]

    def mark_verified(self, items: Iterable[VerifiedReceipt]) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO verified (notice_id, version, recipient, action_id, "
            "log_index, received_at_ms) VALUES (?,?,?,?,?,?)",
            [
                (v.notice_id, v.version, v.recipient, v.action_id, v.log_index, v.received_at_ms)
                for v in items
            ],
        )

    def verified(self, notice_id: str) -> dict[tuple[int, str, str], VerifiedReceipt]:
        """(version, recipient, action id) -> what this node verified before."""
        rows = self.conn.execute(
            "SELECT notice_id, version, recipient, action_id, log_index, received_at_ms "
            "FROM verified WHERE notice_id=?",
            (notice_id,),
        ).fetchall()
        return {
            (int(r[1]), r[2], r[3]): VerifiedReceipt(
                r[0], int(r[1]), r[2], r[3], int(r[4]), int(r[5])
            )
            for r in rows
        }
