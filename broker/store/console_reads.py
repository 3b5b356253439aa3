"""Read-only queries behind the console's views (broker/server/console_reads.py): the
checkpoints issued in a period, and what waits in the queues. A mixin over the store's
connection (SQLite, or PostgreSQL through broker/store/pgsql.py); nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker.store.api import (
    DEAD,
    DELIVERED,
    IN_FLIGHT,
    PENDING,
    PURGED,
    WITHHELD,
    ReplyRow,
    StoredCheckpoint,
)
from broker.store.sql import SqlBase

_STATES = (PENDING, IN_FLIGHT, DELIVERED, DEAD, WITHHELD, PURGED)


@dataclass
class RecipientCounts:
    recipient: str
    states: dict[str, int] = field(default_factory=dict)
    embargoed: int = 0
    oldest_waiting_ms: int = 0
    controls_waiting: int = 0
    controls_dead: int = 0


@dataclass(frozen=True)
class QueuedRow:
    notice_id: str
    version: int
    recipient: str
    originator: str
    kind: str
    state: str
    attempts: int
    accepted_at_ms: int
    not_before_ms: int
    deadline_ms: int
    control: bool


@dataclass(frozen=True)
class QueueSnapshot:
    recipients: list[RecipientCounts]
    waiting: list[QueuedRow]
    dead: list[QueuedRow]
    overdue: list[ReplyRow]  # unanswered past their deadline
    # + judicial: (priority, deliveries waiting, oldest acceptance) of pending and in flight
    priorities: list[tuple[int, int, int]] = field(default_factory=list)


class ConsoleReadsMixin(SqlBase):
    def checkpoints_between(
        self, since_ms: int, until_ms: int, limit: int
    ) -> tuple[list[StoredCheckpoint], int]:
        """Checkpoints issued in [since_ms, until_ms] (until 0: no bound), newest first, at
        most `limit`, each with its cosignature lines; and how many the period holds."""
        until = until_ms or (1 << 62)
        total = self.conn.execute(
            "SELECT COUNT(*) FROM tlog_checkpoints WHERE issued_at_ms BETWEEN ? AND ?",
            (since_ms, until),
        ).fetchone()[0]
        rows = self.conn.execute(
            "SELECT size, root, note, issued_at_ms FROM tlog_checkpoints "
            "WHERE issued_at_ms BETWEEN ? AND ? ORDER BY size DESC LIMIT ?",
            (since_ms, until, limit),
        ).fetchall()
        lines: dict[int, list[str]] = {}
        if rows:
            sizes = [int(r[0]) for r in rows]
            marks = ",".join("?" * len(sizes))
            for size, line in self.conn.execute(
                f"SELECT size, line FROM tlog_cosignatures WHERE size IN ({marks}) "
                "ORDER BY size, witness",
                sizes,
            ):
                lines.setdefault(int(size), []).append(str(line))
        out = [
            StoredCheckpoint(
                int(r[0]), bytes(r[1]), str(r[2]), int(r[3]), tuple(lines.get(int(r[0]), ()))
            )
            for r in rows
        ]
        return out, int(total)

    def queue_snapshot(self, now_ms: int, limit: int) -> QueueSnapshot:
        """Deliveries by recipient and state, the oldest waiting ones, the newest dead
        letters (notices and lifecycle actions) and the replies overdue at `now_ms`."""
        counts: dict[str, RecipientCounts] = {}

        def of(recipient: str) -> RecipientCounts:
            return counts.setdefault(recipient, RecipientCounts(recipient))

        for recipient, state, n in self.conn.execute(
            "SELECT recipient, state, COUNT(*) FROM deliveries GROUP BY recipient, state"
        ):
            of(recipient).states[str(state)] = int(n)
        for recipient, n in self.conn.execute(
            "SELECT recipient, COUNT(*) FROM deliveries WHERE state=? AND not_before_ms>? "
            "GROUP BY recipient",
            (PENDING, now_ms),
        ):
            of(recipient).embargoed = int(n)
        for recipient, oldest in self.conn.execute(
            "SELECT d.recipient, MIN(n.accepted_at_ms) FROM deliveries d "
            "JOIN notices n USING (notice_id, version) WHERE d.state IN (?,?) "
            "GROUP BY d.recipient",
            (PENDING, IN_FLIGHT),
        ):
            of(recipient).oldest_waiting_ms = int(oldest)
        for recipient, state, n in self.conn.execute(
            "SELECT recipient, state, COUNT(*) FROM controls WHERE state IN (?,?,?) "
            "GROUP BY recipient, state",
            (PENDING, IN_FLIGHT, DEAD),
        ):
            row = of(recipient)
            if state == DEAD:
                row.controls_dead += int(n)
            else:
                row.controls_waiting += int(n)

        notices = (
            "SELECT d.notice_id, d.version, d.recipient, n.originator, n.kind, d.state, "
            "d.attempts, n.accepted_at_ms, d.not_before_ms, COALESCE(d.deadline_ms, 0), 0 "
            "FROM deliveries d JOIN notices n USING (notice_id, version) WHERE d.state IN "
        )
        controls = (
            "SELECT a.notice_id, 0, c.recipient, a.actor, a.kind, c.state, c.attempts, "
            "a.at_ms, 0, COALESCE(c.deadline_ms, 0), 1 "
            "FROM controls c JOIN lifecycle_actions a ON a.action_id=c.action_id "
            "WHERE c.state IN "
        )
        waiting = self.conn.execute(
            f"{notices} (?,?) UNION ALL {controls} (?,?) ORDER BY 8, 1, 3 LIMIT ?",
            (PENDING, IN_FLIGHT, PENDING, IN_FLIGHT, limit),
        ).fetchall()
        dead = self.conn.execute(
            f"{notices} (?) UNION ALL {controls} (?) ORDER BY 8 DESC, 1, 3 LIMIT ?",
            (DEAD, DEAD, limit),
        ).fetchall()
        overdue = self.conn.execute(
            "SELECT notice_id, in_reply_to, kind, sender, recipient, sent_at_ms, respond_by_ms, "
            "answered_by FROM replies WHERE answered_by='' AND respond_by_ms>0 AND respond_by_ms<? "
            "ORDER BY respond_by_ms, notice_id, recipient LIMIT ?",
            (now_ms, limit),
        ).fetchall()
        priorities = self.conn.execute(  # + judicial: how long each priority waits
            "SELECT d.priority, COUNT(*), MIN(n.accepted_at_ms) FROM deliveries d "
            "JOIN notices n USING (notice_id, version) WHERE d.state IN (?,?) "
            "GROUP BY d.priority ORDER BY d.priority DESC",
            (PENDING, IN_FLIGHT),
        ).fetchall()
        return QueueSnapshot(
            recipients=[counts[r] for r in sorted(counts)],
            waiting=[_queued(r) for r in waiting],
            dead=[_queued(r) for r in dead],
            overdue=[ReplyRow(*r) for r in overdue],
            priorities=[(int(p), int(n), int(o)) for p, n, o in priorities],
        )


def _queued(r: Any) -> QueuedRow:
    return QueuedRow(
        str(r[0]),
        int(r[1]),
        str(r[2]),
        str(r[3]),
        str(r[4]),
        str(r[5]),
        int(r[6]),
        int(r[7]),
        int(r[8]),
        int(r[9]),
        bool(r[10]),
    )
