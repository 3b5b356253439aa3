"""What a node finds the broker did wrong, or could not prove: kept in the node's state
database and handed to the application (AgencyNode.listen(on_finding=...)).

A finding never stops the node; the node refuses what it must (a stale version, an
unsigned erasure, a notice after its withdrawal) and applies the stricter reading where
it can (obligations). Kinds are listed in FINDINGS, with what each means.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

FINDINGS = {
    # recipient side
    "stale_version": "a version older than one this node holds or saw was delivered",
    "after_closure": "a notice was delivered after its signed withdrawal, cancellation or expiry",
    "unsigned_erasure": "the broker ordered an erasure that no signed data backs",
    "obligations_differ": "the obligations delivered are not those the signed policy attaches",
    "early_release": "an embargoed notice arrived before its signed embargo ended",
    "content_manifest": "a section lacks a field the originator's signed content manifest declares",
    "content_incomplete": "a section lacks a field the signed catalogue asks of it (shown)",
    # originator side
    "recipient_missing": "a recipient this node sealed for is missing from the delivery status",
    "unsealed_recipient": "the status names a recipient this node never sealed for",
    "receipt_unverified": "a receipt does not verify against the recipient's CA-bound key",
    "not_logged": "the notice, or a receipt, is not provably in the transparency log",
    "view_differs": "another agency's signed view of the log conflicts with this node's",
    # the log
    "rollback": "the broker served a log checkpoint older than one this node verified",
    "split_view": "two checkpoints of one size with different roots",
}


@dataclass(frozen=True)
class Finding:
    kind: str  # a key of FINDINGS
    notice_id: str
    subject: str  # the agency or party concerned ("" when none)
    detail: str
    at_ms: int

    def describe(self) -> str:
        what = f" ({self.subject})" if self.subject else ""
        notice = f" notice {self.notice_id}" if self.notice_id else ""
        return f"{self.kind}{notice}{what}: {self.detail}"


FindingHandler = Callable[[Finding], Awaitable[None]]


class FindingLog:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, finding: Finding) -> None:
        self.conn.execute(
            "INSERT INTO findings (kind, notice_id, subject, detail, at_ms) VALUES (?,?,?,?,?)",
            (finding.kind, finding.notice_id, finding.subject, finding.detail, finding.at_ms),
        )

    def since(self, after_seq: int = 0, notice_id: str = "") -> list[tuple[int, Finding]]:
        rows = self.conn.execute(
            "SELECT seq, kind, notice_id, subject, detail, at_ms FROM findings "
            "WHERE seq>? AND (?='' OR notice_id=?) ORDER BY seq",
            (after_seq, notice_id, notice_id),
        ).fetchall()
        return [(int(r[0]), Finding(r[1], r[2], r[3], r[4], int(r[5]))) for r in rows]
