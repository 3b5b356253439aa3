"""Store operations for administration: policy bundles and activations, the
registry's history, administrator actions, and originators' restriction updates.

A mixin over the store's connection (SQLite, or PostgreSQL through broker/store/pgsql.py);
runs inside the StoreRunner's transaction.
"""

from __future__ import annotations

import json

from broker.errors import FailedPrecondition, NotFound
from broker.store.api import (
    DEAD,
    DELIVERED,
    IN_FLIGHT,
    PENDING,
    WITHHELD,
    ActionRow,
    ActivePolicyRow,
    CorpusRow,
    Event,
    HistoryRow,
)
from broker.store.sql import SqlBase


class AdminStoreMixin(SqlBase):
    # -- policy bundles ------------------------------------------------------------------
    def put_bundle(self, version: str, bundle: bytes) -> None:
        """Keep a bundle by version (idempotent)."""
        self.conn.execute(
            "INSERT OR IGNORE INTO policy_bundles (version, bundle) VALUES (?, ?)",
            (version, bundle),
        )

    def get_bundle(self, version: str) -> bytes:
        row = self.conn.execute(
            "SELECT bundle FROM policy_bundles WHERE version=?", (version,)
        ).fetchone()
        if row is None:
            raise NotFound(f"the broker has no policy bundle {version}")
        return bytes(row[0])

    def activate_bundle(
        self,
        version: str,
        signed_activation: bytes | None,
        admin: str,
        at_ms: int,
        reason: str,
        sequence: int,
    ) -> int:
        """Make `version` (already stored) the active bundle; return the activation sequence.

        `sequence` must be exactly the next one (raises FailedPrecondition otherwise), so
        two administrators racing cannot both win and an old activation cannot be replayed.
        """
        current = self.conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM policy_activations"
        ).fetchone()
        expected = int(current[0]) + 1
        if sequence != expected:
            raise FailedPrecondition(
                f"activation sequence {sequence} is stale; the next one is {expected}: "
                "re-read the history and sign again"
            )
        self.get_bundle(version)
        self.conn.execute("UPDATE policy_bundles SET active=0 WHERE active=1")
        self.conn.execute(
            "UPDATE policy_bundles SET active=1, signed_activation=?, activated_by=?, "
            "activated_at_ms=? WHERE version=?",
            (signed_activation, admin, at_ms, version),
        )
        self.conn.execute(
            "INSERT INTO policy_activations (seq, version, activated_by, activated_at_ms, reason) "
            "VALUES (?,?,?,?,?)",
            (sequence, version, admin, at_ms, reason),
        )
        return sequence

    def active_bundle(self) -> ActivePolicyRow | None:
        row = self.conn.execute(
            "SELECT b.version, b.bundle, b.signed_activation, "
            "(SELECT COALESCE(MAX(seq), 0) FROM policy_activations) "
            "FROM policy_bundles b WHERE b.active=1"
        ).fetchone()
        if row is None:
            return None
        return ActivePolicyRow(
            row[0], bytes(row[1]), None if row[2] is None else bytes(row[2]), int(row[3])
        )

    def policy_history(self) -> list[HistoryRow]:
        active = self.active_bundle()
        last = active.sequence if active else 0
        rows = self.conn.execute(
            "SELECT seq, version, activated_by, activated_at_ms, reason FROM policy_activations "
            "ORDER BY seq DESC"
        ).fetchall()
        return [HistoryRow(r[0], r[1], r[2], r[3], r[4], r[0] == last) for r in rows]

    # -- administrator actions ------------------------------------------------------------
    def record_action(
        self, actor: str, action: str, target: str, detail: object, at_ms: int
    ) -> None:
        self.conn.execute(
            "INSERT INTO admin_actions (actor, action, target, detail, at_ms) VALUES (?,?,?,?,?)",
            (actor, action, target, json.dumps(detail, sort_keys=True), at_ms),
        )

    def admin_actions(self, limit: int) -> list[ActionRow]:
        rows = self.conn.execute(
            "SELECT seq, actor, action, target, detail, at_ms FROM admin_actions "
            "ORDER BY seq DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [ActionRow(*r) for r in rows]

    # -- corpus for policy diffs -------------------------------------------------------------
    def recent_notices(self, limit: int) -> list[CorpusRow]:
        rows = self.conn.execute(
            "SELECT notice_id, version, kind, decisions FROM notices "
            "ORDER BY accepted_at_ms DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [CorpusRow(*r) for r in rows]

    # -- restrictions updated after publishing ------------------------------------------------
    def notice_owner(self, notice_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT originator FROM notices WHERE notice_id=? LIMIT 1", (notice_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_restrictions(
        self, notice_id: str, sequence: int, restrictions: bytes, signed: bytes, at_ms: int
    ) -> bool:
        """Store a signed restriction update; False if these very bytes are stored already
        (a retry whose first answer was lost). Raises FailedPrecondition for a stale one."""
        row = self.conn.execute(
            "SELECT sequence, signed FROM notice_restrictions WHERE notice_id=?", (notice_id,)
        ).fetchone()
        if row is not None and sequence == int(row[0]) and bytes(row[1]) == signed:
            return False
        if row is not None and sequence <= int(row[0]):
            raise FailedPrecondition(
                f"restriction update {sequence} is not newer than {row[0]}; use a higher sequence"
            )
        self.conn.execute(
            "INSERT INTO notice_restrictions VALUES (?,?,?,?,?) ON CONFLICT(notice_id) DO UPDATE "
            "SET sequence=excluded.sequence, restrictions=excluded.restrictions, "
            "signed=excluded.signed, at_ms=excluded.at_ms",
            (notice_id, sequence, restrictions, signed, at_ms),
        )
        return True

    def all_restriction_overrides(self) -> dict[str, bytes]:
        rows = self.conn.execute("SELECT notice_id, restrictions FROM notice_restrictions")
        return {r[0]: bytes(r[1]) for r in rows}

    def latest_envelope(self, notice_id: str) -> bytes:
        """The stored envelope (without its ciphertexts) of a notice's newest version; b""
        when there is none, or its ciphertext was purged."""
        row = self.conn.execute(
            "SELECT envelope FROM notices WHERE notice_id=? ORDER BY version DESC LIMIT 1",
            (notice_id,),
        ).fetchone()
        return b"" if row is None else bytes(row[0])

    def queued_with_envelopes(
        self, notice_id: str
    ) -> list[tuple[int, str, int, tuple[str, ...], bytes]]:
        """(seq, recipient, version, sections, envelope) of deliveries still queued (copies in
        flight have already left the broker; purged ones are gone)."""
        rows = self.conn.execute(
            "SELECT d.seq, d.recipient, d.version, d.sections, n.envelope FROM deliveries d "
            "JOIN notices n ON n.notice_id=d.notice_id AND n.version=d.version "
            "WHERE d.notice_id=? AND d.state=? AND length(n.envelope) > 0",
            (notice_id, PENDING),
        ).fetchall()
        return [(r[0], r[1], r[2], tuple(json.loads(r[3])), bytes(r[4])) for r in rows]

    # -- withholding at forwarding time -----------------------------------------------------
    def queued_to(self, recipient: str) -> list[int]:
        """Deliveries to `recipient` not yet final (pending or in flight), oldest first."""
        rows = self.conn.execute(
            "SELECT seq FROM deliveries WHERE recipient=? AND state IN (?,?) ORDER BY seq",
            (recipient, PENDING, IN_FLIGHT),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def withhold(self, seq: int, reason: str, now_ms: int, leased: bool = False) -> Event | None:
        """Withhold a queued delivery for good and tell the originator. None if already final.

        `leased`: it was just leased and is not sent after all; the lease's attempt is given
        back, so that `attempts` counts only copies that may have reached the recipient."""
        row = self.conn.execute(
            "SELECT d.recipient, d.notice_id, d.version, d.state, n.originator "
            "FROM deliveries d JOIN notices n ON n.notice_id=d.notice_id AND n.version=d.version "
            "WHERE d.seq=?" + self.lock_rows("d"),
            (seq,),
        ).fetchone()
        if row is None or row[3] in (DELIVERED, DEAD, WITHHELD):
            return None
        recipient, notice_id, version, _state, originator = row
        self.conn.execute(
            "UPDATE deliveries SET state=?, deadline_ms=NULL, attempts=attempts-? WHERE seq=?",
            (WITHHELD, int(leased), seq),
        )
        cur = self.conn.execute(
            "INSERT INTO events (agency, kind, notice_id, version, recipient, detail, at_ms) "
            "VALUES (?,?,?,?,?,?,?)",
            (originator, "withheld", notice_id, version, recipient, reason, now_ms),
        )
        return Event(
            int(cur.lastrowid or 0),
            originator,
            "withheld",
            notice_id,
            version,
            recipient,
            reason,
            now_ms,
        )
