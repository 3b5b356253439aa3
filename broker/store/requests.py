"""Store operations for judicial cooperation requests: each request's current state
and running time limit (for listings and reminders) and its signed steps in order.
The steps are also lifecycle actions (lifecycle_actions and controls carry them to
the other party, broker/store/lifecycle.py); the rules are in broker/core/requests.py.
A mixin over the store's connection, run inside the StoreRunner's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.core.requests import Deadline, RequestState
from broker.store.api import Event
from broker.store.sql import SqlBase

__all__ = ["RequestRow", "RequestStoreMixin"]

# reminded: 0 nothing sent for the running limit, 1 reminder sent, 2 overdue notice sent
_REMINDED, _OVERDUE = 1, 2


@dataclass(frozen=True)
class RequestRow:
    """A request as the broker lists it, with its signed steps in order."""

    notice_id: str
    kind: str
    issuer: str
    executor: str
    priority: str
    state: str
    issued_at_ms: int
    updated_at_ms: int
    deadline: str
    deadline_ms: int
    grounds: tuple[str, ...]
    steps: tuple[tuple[bytes, bytes], ...]  # (signed LifecycleAction bytes, signature)


class RequestStoreMixin(SqlBase):
    def request_head(self, notice_id: str) -> bytes:
        """The stored head of the notice's first version (Delivery fields 2 and 6: the
        signed header), b'' when there is none."""
        row = self.conn.execute(
            "SELECT head FROM notices WHERE notice_id=? AND version=1", (notice_id,)
        ).fetchone()
        return bytes(row[0]) if row is not None else b""

    def request_steps(self, notice_id: str) -> list[tuple[bytes, bytes]]:
        """The request's signed steps in order: (action bytes, signature)."""
        rows = self.conn.execute(
            "SELECT action, signature FROM request_steps WHERE notice_id=? ORDER BY position",
            (notice_id,),
        ).fetchall()
        return [(bytes(a), bytes(s)) for a, s in rows]

    def request_row(self, notice_id: str) -> RequestRow | None:
        """The request with its steps, its row locked for this transaction (PostgreSQL)."""
        row = self.conn.execute(
            "SELECT notice_id, kind, issuer, executor, priority, state, issued_at_ms, "
            "updated_at_ms, deadline, deadline_ms, grounds FROM requests r WHERE notice_id=?"
            + self.lock_rows("r"),
            (notice_id,),
        ).fetchone()
        return None if row is None else self._row(row)

    def _row(self, r: Sequence[Any]) -> RequestRow:
        return RequestRow(
            notice_id=r[0],
            kind=r[1],
            issuer=r[2],
            executor=r[3],
            priority=r[4],
            state=r[5],
            issued_at_ms=r[6],
            updated_at_ms=r[7],
            deadline=r[8],
            deadline_ms=r[9],
            grounds=tuple(json.loads(r[10])),
            steps=tuple(self.request_steps(r[0])),
        )

    def save_request_step(
        self,
        state: RequestState,
        running: Deadline | None,
        action_id: str,
        action: bytes,
        signature: bytes,
    ) -> None:
        """Append a step and record the state and time limit it led to."""
        deadline, deadline_ms, remind_at = (
            (running.name, running.at_ms, running.remind_at_ms) if running else ("", 0, 0)
        )
        grounds = json.dumps(list(state.grounds))
        if state.steps == 1:
            self.conn.execute(
                "INSERT INTO requests (notice_id, kind, issuer, executor, priority, state, "
                "issued_at_ms, updated_at_ms, deadline, deadline_ms, remind_at_ms, reminded, "
                "grounds) VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?)",
                (
                    state.notice_id,
                    state.kind,
                    state.issuer,
                    state.executor,
                    state.priority,
                    state.state,
                    state.issued_at_ms,
                    state.last_at_ms,
                    deadline,
                    deadline_ms,
                    remind_at,
                    grounds,
                ),
            )
        else:
            # A new limit (or a moved one) re-arms its reminders.
            self.conn.execute(
                "UPDATE requests SET state=?, updated_at_ms=?, grounds=?, "
                "reminded=CASE WHEN deadline=? AND deadline_ms=? THEN reminded ELSE 0 END, "
                "deadline=?, deadline_ms=?, remind_at_ms=? WHERE notice_id=?",
                (
                    state.state,
                    state.last_at_ms,
                    grounds,
                    deadline,
                    deadline_ms,
                    deadline,
                    deadline_ms,
                    remind_at,
                    state.notice_id,
                ),
            )
        self.conn.execute(
            "INSERT INTO request_steps (notice_id, position, action_id, action, signature) "
            "VALUES (?,?,?,?,?)",
            (state.notice_id, state.steps, action_id, action, signature),
        )

    def requests_for(self, agency: str, role: str, open_only: bool) -> list[RequestRow]:
        """The requests `agency` issued (role 'issuer'), must execute ('executor') or
        both (''), newest first, each with its steps."""
        where = {"issuer": "issuer=?", "executor": "executor=?"}.get(
            role, "(issuer=? OR executor=?)"
        )
        args: tuple[object, ...] = (agency,) if role in ("issuer", "executor") else (agency, agency)
        if open_only:
            where += " AND state NOT IN ('executed', 'refused', 'withdrawn')"
        rows = self.conn.execute(
            "SELECT notice_id, kind, issuer, executor, priority, state, issued_at_ms, "
            "updated_at_ms, deadline, deadline_ms, grounds FROM requests WHERE "
            + where
            + " ORDER BY issued_at_ms DESC, notice_id",
            args,
        ).fetchall()
        return [self._row(r) for r in rows]

    def due_request_reminders(self, now_ms: int) -> list[Event]:
        """Remind both parties of a request whose running time limit comes near (once
        per limit), and tell both when it has passed (once). Returns the events."""
        rows = self.conn.execute(
            "SELECT r.notice_id, r.issuer, r.executor, r.kind, r.deadline, r.deadline_ms, "
            "r.remind_at_ms, r.reminded FROM requests r WHERE r.deadline<>'' AND r.reminded<? "
            "AND r.remind_at_ms<=?" + self.claim_rows("r"),
            (_OVERDUE, now_ms),
        ).fetchall()
        events: list[Event] = []
        for notice_id, issuer, executor, kind, deadline, due, _remind_at, reminded in rows:
            if now_ms > due:
                what, level = "request_overdue", _OVERDUE
                detail = f"{kind} {deadline} limit passed at {due} ms"
            elif reminded < _REMINDED:
                what, level = "request_reminder", _REMINDED
                detail = f"{kind} {deadline} due at {due} ms"
            else:
                continue
            self.conn.execute(
                "UPDATE requests SET reminded=? WHERE notice_id=?", (level, notice_id)
            )
            for agency in (issuer, executor):
                cur = self.conn.execute(
                    "INSERT INTO events (agency, kind, notice_id, version, recipient, detail, "
                    "at_ms) VALUES (?,?,?,?,?,?,?)",
                    (agency, what, notice_id, 0, "", detail, now_ms),
                )
                events.append(
                    Event(int(cur.lastrowid or 0), agency, what, notice_id, 0, "", detail, now_ms)
                )
        return events
