"""Store operations for the lifecycle of notices: their state, the actions taken on
them, the control deliveries that carry each action to each recipient, expiry and
review, and replies with their deadlines. A mixin over the store's connection (SQLite,
or PostgreSQL through broker/store/pgsql.py), run inside the StoreRunner's transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from broker.core.lifecycle import Effect, NoticeState
from broker.errors import BrokerError, FailedPrecondition, InvalidArgument, NotFound
from broker.store.api import (
    DEAD,
    DELIVERED,
    IN_FLIGHT,
    PENDING,
    PURGED,
    ControlReceipt,
    ControlRow,
    Event,
    LeasedControl,
    ReplyRow,
)
from broker.store.sql import SqlBase

__all__ = ["ControlReceipt", "LeasedControl", "LifecycleStoreMixin", "ReplyRow"]

_OPEN = (PENDING, IN_FLIGHT)


class LifecycleStoreMixin(SqlBase):
    # -- state -------------------------------------------------------------------------
    def notice_state(self, notice_id: str) -> NoticeState | None:
        head = self.conn.execute(
            "SELECT MIN(originator), MIN(kind), MIN(created_at_ms), MAX(expires_at_ms) "
            "FROM notices "
            "WHERE notice_id=?",
            (notice_id,),
        ).fetchone()
        if head is None or head[0] is None:
            return None
        rows = self.conn.execute(
            "SELECT recipient, state, version, attempts FROM deliveries WHERE notice_id=?",
            (notice_id,),
        ).fetchall()
        latest = max((v for _r, _st, v, _n in rows), default=0)
        # Who may hold a copy of any version and is still in the audience of the latest one
        # (those a newer version left out were told to delete theirs). A copy that was ever
        # sent may be held, whatever its state now: a receipt lost with a broken stream
        # leaves it pending again, or withheld on redelivery (withholding at forwarding
        # time gives the attempt back, so a copy never sent counts none).
        current = frozenset(r for r, _st, v, _n in rows if v == latest)
        received = current & frozenset(r for r, _st, _v, n in rows if n > 0)
        pending = frozenset(r for r, st, v, _n in rows if st == PENDING and v == latest) - received
        extra = self.conn.execute(
            "SELECT suspended_until_ms, closed, expires_at_ms, flags FROM notice_state "
            "WHERE notice_id=?",
            (notice_id,),
        ).fetchone()
        suspended, closed, expires, flags = extra if extra else (0, "", head[3], "[]")
        return NoticeState(
            notice_id=notice_id,
            originator=head[0],
            kind=head[1],
            created_at_ms=head[2],
            expires_at_ms=expires,
            received=received,
            pending=pending,
            suspended_until_ms=suspended,
            closed=closed,
            flags=frozenset(json.loads(flags)),
        )

    def track_notice(self, notice_id: str, expires_at_ms: int) -> None:
        """Start a notice's lifecycle state; a new version's signed expiry replaces the old."""
        self.conn.execute(
            "INSERT INTO notice_state (notice_id, expires_at_ms) VALUES (?, ?) "
            "ON CONFLICT(notice_id) DO UPDATE SET expires_at_ms=excluded.expires_at_ms",
            (notice_id, expires_at_ms),
        )

    def latest_version(self, notice_id: str) -> int:
        row = self.conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM notices WHERE notice_id=?", (notice_id,)
        ).fetchone()
        return int(row[0])

    # -- actions -----------------------------------------------------------------------
    def lifecycle_action(
        self, action_id: str
    ) -> tuple[str, str, bytes, tuple[str, ...], int] | None:
        """(notice id, actor, action bytes, agencies told, copies purged) of an action taken."""
        row = self.conn.execute(
            "SELECT notice_id, actor, action, told, purged FROM lifecycle_actions "
            "WHERE action_id=?",
            (action_id,),
        ).fetchone()
        if row is None:
            return None
        return row[0], row[1], bytes(row[2]), tuple(json.loads(row[3])), int(row[4])

    def take_action(
        self,
        *,
        action_id: str,
        notice_id: str,
        actor: str,
        kind: str,
        action: bytes,
        signature: bytes,
        effect: Effect,
        now_ms: int,
    ) -> int:
        """Apply an accepted action: its effect on the notice, one control delivery per
        agency to tell, purges. Returns how many undelivered copies were purged."""
        state = self.notice_state(notice_id)
        if state is None:
            raise NotFound(f"no notice {notice_id}")
        self.track_notice(notice_id, state.expires_at_ms)
        sets = []
        values: list[object] = []
        if effect.suspended_until_ms is not None:
            sets.append("suspended_until_ms=?")
            values.append(effect.suspended_until_ms)
        if effect.closed:
            sets.append("closed=?")
            values.append(effect.closed)
        if effect.expires_at_ms is not None:
            sets.append("expires_at_ms=?, review_sent=0")
            values.append(effect.expires_at_ms)
        if effect.flags is not None:
            sets.append("flags=?")
            values.append(json.dumps(sorted(effect.flags)))
        if sets:
            self.conn.execute(
                f"UPDATE notice_state SET {', '.join(sets)} WHERE notice_id=?",
                (*values, notice_id),
            )
        purged = self.purge_pending(notice_id, 0, kind, now_ms) if effect.purge_pending else 0
        if effect.closed:
            # The ciphertext leaves the broker; digests, decisions and receipts stay. Copies
            # in flight are already being told to delete: they are not sent again. The
            # newest version's signed header (metadata, no section) stays too: it is the
            # proof a supersession still owed to a recipient it left out must carry.
            self.conn.execute(
                "UPDATE notices SET envelope=x'', head=CASE WHEN version="
                "(SELECT MAX(version) FROM notices WHERE notice_id=?) THEN head ELSE x'' END "
                "WHERE notice_id=?",
                (notice_id, notice_id),
            )
            self.conn.execute("DELETE FROM notice_sections WHERE notice_id=?", (notice_id,))
            self.conn.execute(
                "UPDATE deliveries SET cut=x'', wrap=x'', obligations=x'' WHERE notice_id=?",
                (notice_id,),
            )
            self.conn.execute(
                "UPDATE deliveries SET state=?, deadline_ms=NULL WHERE notice_id=? AND state=?",
                (PURGED, notice_id, IN_FLIGHT),
            )
        self.conn.execute(
            "INSERT INTO lifecycle_actions VALUES (?,?,?,?,?,?,?,?,?)",
            (
                action_id,
                notice_id,
                actor,
                kind,
                action,
                signature,
                json.dumps(list(effect.tell)),
                purged,
                now_ms,
            ),
        )
        self.conn.executemany(
            "INSERT INTO controls (recipient, action_id, state) VALUES (?,?,?)",
            [(r, action_id, PENDING) for r in effect.tell],
        )
        return purged

    def purge_pending(self, notice_id: str, below_version: int, why: str, now_ms: int) -> int:
        """Purge undelivered copies (all versions, or those below `below_version`); tell
        the originator which recipients will never get them. Below a version, copies in
        flight are purged too (without an event: they may have arrived)."""
        rows = self.conn.execute(
            "SELECT d.seq, d.recipient, d.version, n.originator FROM deliveries d "
            "JOIN notices n ON n.notice_id=d.notice_id AND n.version=d.version "
            "WHERE d.notice_id=? AND d.state=? AND (?=0 OR d.version<?)" + self.lock_rows("d"),
            (notice_id, PENDING, below_version, below_version),
        ).fetchall()
        for seq, recipient, version, originator in rows:
            self.conn.execute(
                "UPDATE deliveries SET state=?, deadline_ms=NULL WHERE seq=?", (PURGED, seq)
            )
            self.conn.execute(
                "INSERT INTO events (agency, kind, notice_id, version, recipient, detail, at_ms) "
                "VALUES (?,?,?,?,?,?,?)",
                (
                    originator,
                    "purged",
                    notice_id,
                    version,
                    recipient,
                    f"never delivered: {why}",
                    now_ms,
                ),
            )
        if below_version:
            # Superseded copies in flight are not sent again either: whoever the new version
            # leaves out is told to delete them, the others get the new version.
            self.conn.execute(
                "UPDATE deliveries SET state=?, deadline_ms=NULL "
                "WHERE notice_id=? AND state=? AND version<?",
                (PURGED, notice_id, IN_FLIGHT, below_version),
            )
        return len(rows)

    # -- control deliveries ------------------------------------------------------------------
    def lease_controls(
        self, recipient: str, limit: int, now_ms: int, lease_ms: int
    ) -> list[LeasedControl]:
        rows = self.conn.execute(
            "SELECT c.seq, c.action_id, a.action, a.signature, a.actor, c.attempts, a.kind, "
            "a.notice_id FROM controls c JOIN lifecycle_actions a ON a.action_id=c.action_id "
            "WHERE c.recipient=? AND c.state=? ORDER BY c.seq LIMIT ?" + self.claim_rows("c"),
            (recipient, PENDING, limit),
        ).fetchall()
        self.conn.executemany(
            "UPDATE controls SET state=?, attempts=attempts+1, deadline_ms=? WHERE seq=?",
            [(IN_FLIGHT, now_ms + lease_ms, r[0]) for r in rows],
        )
        return [
            LeasedControl(
                r[0],
                recipient,
                r[1],
                bytes(r[2]),
                bytes(r[3]),
                r[4],
                r[5] + 1,
                r[6],
                self._newest_head(r[7]) if r[6] == "superseded" else b"",
            )
            for r in rows
        ]

    def _newest_head(self, notice_id: str) -> bytes:
        row = self.conn.execute(
            "SELECT head FROM notices WHERE notice_id=? ORDER BY version DESC LIMIT 1",
            (notice_id,),
        ).fetchone()
        return b"" if row is None else bytes(row[0])

    def release_controls(self, recipient: str, now_ms: int, max_attempts: int) -> list[Event]:
        """A new stream: what the last one left in flight goes out again at once, or is
        given up once it has used its attempts (as for notices)."""
        self.conn.execute(
            "UPDATE controls SET deadline_ms=? WHERE recipient=? AND state=?",
            (now_ms - 1, recipient, IN_FLIGHT),
        )
        return self.expire_controls(now_ms, max_attempts, recipient=recipient)

    def expire_controls(
        self, now_ms: int, max_attempts: int, recipient: str | None = None
    ) -> list[Event]:
        """Requeue control deliveries past their deadline; give up after max attempts
        (the actor's originator is told, as for notices)."""
        rows = self.conn.execute(
            "SELECT c.seq, c.recipient, c.attempts, a.notice_id, a.actor, a.kind "
            "FROM controls c JOIN lifecycle_actions a ON a.action_id=c.action_id "
            "WHERE c.state=? AND c.deadline_ms < ? AND (CAST(? AS TEXT) IS NULL OR c.recipient=?)"
            + self.claim_rows("c"),
            (IN_FLIGHT, now_ms, recipient, recipient),
        ).fetchall()
        events = []
        for seq, to, attempts, notice_id, actor, kind in rows:
            if attempts < max_attempts:
                self.conn.execute(
                    "UPDATE controls SET state=?, deadline_ms=NULL WHERE seq=?", (PENDING, seq)
                )
                continue
            self.conn.execute(
                "UPDATE controls SET state=?, deadline_ms=NULL WHERE seq=?", (DEAD, seq)
            )
            owner = self.conn.execute(
                "SELECT originator FROM notices WHERE notice_id=? LIMIT 1", (notice_id,)
            ).fetchone()
            agency = owner[0] if owner else actor
            detail = f"{kind} not acknowledged after {attempts} attempts"
            cur = self.conn.execute(
                "INSERT INTO events (agency, kind, notice_id, version, recipient, detail, at_ms) "
                "VALUES (?,?,?,?,?,?,?)",
                (agency, "dead_lettered", notice_id, 0, to, detail, now_ms),
            )
            events.append(
                Event(
                    int(cur.lastrowid or 0),
                    agency,
                    "dead_lettered",
                    notice_id,
                    0,
                    to,
                    detail,
                    now_ms,
                )
            )
        return events

    def record_control_receipts(
        self, receipts: Sequence[ControlReceipt]
    ) -> list[tuple[str, str, bool]]:
        """Mark control deliveries acknowledged (idempotent); return (action id, notice id,
        whether this is the first acknowledgement).

        Raises, for the first receipt that does not count (storing none): NotFound for an
        action never sent to that recipient, InvalidArgument when the receipt names other
        action bytes than those sent, FailedPrecondition when the action was not streamed
        to it (pending, or given up)."""
        out = []
        for action_id, notice_id, first, error in self.receive_control_receipts(receipts):
            if error is not None:
                raise error
            out.append((action_id, notice_id, first))
        return out

    def receive_control_receipts(
        self, receipts: Sequence[ControlReceipt]
    ) -> list[tuple[str, str, bool, BrokerError | None]]:
        """As record_control_receipts, refusing receipts one by one (the others count)."""
        accepted: list[tuple[str, str, bool, BrokerError | None]] = []
        for r in receipts:
            row = self.conn.execute(
                "SELECT c.seq, c.state, a.action, a.notice_id FROM controls c "
                "JOIN lifecycle_actions a ON a.action_id=c.action_id "
                "WHERE c.action_id=? AND c.recipient=?" + self.lock_rows("c"),
                (r.action_id, r.recipient),
            ).fetchone()
            error: BrokerError | None = None
            if row is None:
                error = NotFound(f"no lifecycle action {r.action_id} was sent to {r.recipient}")
            elif hashlib.sha256(bytes(row[2])).digest() != r.digest:
                error = InvalidArgument(f"receipt for action {r.action_id} names other bytes")
            elif row[1] not in (IN_FLIGHT, DELIVERED):
                error = FailedPrecondition(
                    f"lifecycle action {r.action_id} was not streamed to {r.recipient} "
                    "(or was given up): acknowledge it when it arrives"
                )
            if error is not None:
                accepted.append((r.action_id, "" if row is None else str(row[3]), False, error))
                continue
            first = row[1] != DELIVERED
            if first:
                self.conn.execute(
                    "UPDATE controls SET state=?, deadline_ms=NULL, delivered_at_ms=?, receipt=? "
                    "WHERE seq=?",
                    (DELIVERED, r.at_ms, r.proven, row[0]),
                )
            accepted.append((r.action_id, str(row[3]), first, None))
        return accepted

    def control_status(self, notice_id: str) -> list[tuple[str, str, str, str, int]]:
        """(action id, kind, recipient, state, attempts) of every control for a notice."""
        rows = self.conn.execute(
            "SELECT a.action_id, a.kind, c.recipient, c.state, c.attempts FROM controls c "
            "JOIN lifecycle_actions a ON a.action_id=c.action_id WHERE a.notice_id=? "
            "ORDER BY c.seq",
            (notice_id,),
        ).fetchall()
        return [(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    def action_status(self, notice_id: str) -> list[ControlRow]:
        """Every control of a notice with its acknowledgement (the proven receipt)."""
        rows = self.conn.execute(
            "SELECT a.action_id, a.kind, a.actor, c.recipient, c.state, c.attempts, c.receipt "
            "FROM controls c JOIN lifecycle_actions a ON a.action_id=c.action_id "
            "WHERE a.notice_id=? ORDER BY c.seq",
            (notice_id,),
        ).fetchall()
        return [
            ControlRow(
                r[0], r[1], r[2], r[3], r[4], int(r[5]), None if r[6] is None else bytes(r[6])
            )
            for r in rows
        ]

    # -- expiry and review -------------------------------------------------------------------
    def due_expiries(self, now_ms: int, limit: int = 100) -> list[str]:
        rows = self.conn.execute(
            "SELECT notice_id FROM notice_state WHERE closed='' AND expires_at_ms<=? LIMIT ?"
            + self.claim_rows("notice_state"),
            (now_ms, limit),
        ).fetchall()
        return [r[0] for r in rows]

    def due_reviews(self, now_ms: int, lead_days: Mapping[str, int]) -> list[Event]:
        """Remind originators whose notices expire within their kind's review lead (SIS:
        four months, INTERPOL: six), once per expiry (an extension re-arms it). A notice
        whose whole life is shorter than the lead has no review point: it just expires
        (it is marked so once, and not read again until an extension re-arms it).

        Runs at every housekeeping tick: reads only the open notices of kinds with a
        review lead that expire within the longest lead (the expiry index), not every
        notice ever stored."""
        kinds = sorted(lead_days)
        if not kinds:
            return []
        horizon = now_ms + max(lead_days[k] for k in kinds) * 86_400_000
        rows = self.conn.execute(
            "SELECT s.notice_id, n.originator, n.kind, s.expires_at_ms, n.created_at_ms "
            "FROM notice_state s JOIN notices n ON n.notice_id=s.notice_id AND n.version=1 "
            "WHERE s.closed='' AND s.expires_at_ms<=? AND s.review_sent=0 "
            f"AND n.kind IN ({','.join('?' * len(kinds))})" + self.claim_rows("s"),
            (horizon, *kinds),
        ).fetchall()
        events = []
        for notice_id, originator, kind, expires, created in rows:
            lead = lead_days[kind] * 86_400_000
            if now_ms < expires - lead:
                continue
            self.conn.execute(
                "UPDATE notice_state SET review_sent=1 WHERE notice_id=?", (notice_id,)
            )
            if expires - created < lead:
                continue  # no review point in so short a life
            detail = (
                f"review due: expires at {expires} ms; extend it with a justification "
                "or let it expire"
            )
            cur = self.conn.execute(
                "INSERT INTO events (agency, kind, notice_id, version, recipient, detail, at_ms) "
                "VALUES (?,?,?,?,?,?,?)",
                (originator, "review_due", notice_id, 0, "", detail, now_ms),
            )
            events.append(
                Event(
                    int(cur.lastrowid or 0),
                    originator,
                    "review_due",
                    notice_id,
                    0,
                    "",
                    detail,
                    now_ms,
                )
            )
        return events

    # -- replies ----------------------------------------------------------------------------
    def record_reply(self, row: ReplyRow, recipients: Sequence[str]) -> None:
        """File a reply once per recipient; a reply to a reply answers it."""
        self.conn.executemany(
            "INSERT OR IGNORE INTO replies VALUES (?,?,?,?,?,?,?,?)",
            [
                (
                    row.notice_id,
                    row.in_reply_to,
                    row.kind,
                    row.sender,
                    recipient,
                    row.sent_at_ms,
                    row.respond_by_ms,
                    "",
                )
                for recipient in sorted(recipients)
            ],
        )
        # Only the sender's own copy of what it answers counts as answered.
        self.conn.execute(
            "UPDATE replies SET answered_by=? WHERE notice_id=? AND recipient=? AND answered_by=''",
            (row.notice_id, row.in_reply_to, row.sender),
        )

    def replies_for(self, agency: str, open_only: bool) -> list[ReplyRow]:
        rows = self.conn.execute(
            "SELECT notice_id, in_reply_to, kind, sender, recipient, sent_at_ms, respond_by_ms, "
            "answered_by FROM replies WHERE (sender=? OR recipient=?) "
            "AND (?=0 OR (answered_by='' AND respond_by_ms>0)) ORDER BY sent_at_ms",
            (agency, agency, int(open_only)),
        ).fetchall()
        return [ReplyRow(*r) for r in rows]
