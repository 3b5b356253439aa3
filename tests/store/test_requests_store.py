"""The store's side of judicial requests and urgency, on every backend (SQLite and
PostgreSQL): urgent deliveries leased before a backlog of normal ones, request rows
with their steps, and reminders before and after a time limit."""

from __future__ import annotations

from dataclasses import replace

from broker.core.requests import Deadline, RequestState
from broker.store.runner import StoreRunner
from tests.store.test_contract import NOW, R1, item, lease, notice, publish

HOUR = 3_600_000


def test_urgent_deliveries_are_leased_before_a_backlog(runner: StoreRunner) -> None:
    backlog = [notice(f"normal-{i}") for i in range(20)]
    publish(runner, *(item(n, R1) for n in backlog))
    urgent = [replace(notice(f"urgent-{i}"), priority=1) for i in range(3)]
    publish(runner, *(item(n, R1) for n in urgent))
    publish(runner, item(notice("normal-late"), R1))

    first = lease(runner, R1, limit=5)
    assert [d.notice_id for d in first] == [
        "urgent-0",
        "urgent-1",
        "urgent-2",
        "normal-0",
        "normal-1",
    ]
    assert [d.priority for d in first] == [1, 1, 1, 0, 0]
    assert all(d.accepted_at_ms == NOW for d in first)
    rest = lease(runner, R1, limit=100)
    assert [d.notice_id for d in rest] == [n.notice_id for n in backlog[2:]] + ["normal-late"]


def state(steps: int, **fields: object) -> RequestState:
    base = RequestState(
        notice_id="6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        kind="request.eio",
        issuer="FR-NCB",
        executor="DE-BKA",
        priority="normal",
        state="issued",
        issued_at_ms=NOW,
        last_at_ms=NOW,
        steps=steps,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_request_rows_steps_and_reminders(runner: StoreRunner) -> None:
    issued = state(1)
    runner.call_sync(lambda s: s.save_request_step(issued, None, "a-1", b"issue", b"sig1"))
    due = NOW + 720 * HOUR
    limit = Deadline("decision", due, due - 120 * HOUR)
    received = state(2, state="received", received_at_ms=NOW + 1, last_at_ms=NOW + 1)
    runner.call_sync(lambda s: s.save_request_step(received, limit, "a-2", b"receive", b"sig2"))

    (row,) = runner.call_sync(lambda s: s.requests_for("DE-BKA", "executor", False))
    assert (row.state, row.deadline, row.deadline_ms) == ("received", "decision", due)
    assert row.steps == ((b"issue", b"sig1"), (b"receive", b"sig2"))
    assert runner.call_sync(lambda s: s.requests_for("DE-BKA", "issuer", False)) == []
    assert runner.call_sync(lambda s: s.requests_for("IT-BORDER", "", False)) == []
    assert runner.call_sync(lambda s: s.request_row(row.notice_id)) == row

    def sweep(at: int) -> list[tuple[str, str]]:
        events = runner.call_sync(lambda s: s.due_request_reminders(at))
        return sorted((e.agency, e.kind) for e in events)

    assert sweep(due - 120 * HOUR - 1) == []
    assert sweep(due - 120 * HOUR) == [
        ("DE-BKA", "request_reminder"),
        ("FR-NCB", "request_reminder"),
    ]
    assert sweep(due) == []
    assert sweep(due + 1) == [("DE-BKA", "request_overdue"), ("FR-NCB", "request_overdue")]
    assert sweep(due + 2) == []
    # A new time limit re-arms the reminders; a closed request has none.
    later = Deadline("execution", due + 2000 * HOUR, due + 1900 * HOUR)
    recognised = state(3, state="recognised", last_at_ms=NOW + 2)
    runner.call_sync(lambda s: s.save_request_step(recognised, later, "a-3", b"rec", b"sig3"))
    assert sweep(due + 1900 * HOUR) == [
        ("DE-BKA", "request_reminder"),
        ("FR-NCB", "request_reminder"),
    ]
    executed = state(4, state="executed", last_at_ms=NOW + 3)
    runner.call_sync(lambda s: s.save_request_step(executed, None, "a-4", b"exe", b"sig4"))
    assert sweep(due + 3000 * HOUR) == []
    assert runner.call_sync(lambda s: s.requests_for("FR-NCB", "", True)) == []


def test_the_queue_snapshot_counts_waiting_deliveries_by_priority(runner: StoreRunner) -> None:
    publish(runner, *(item(notice(f"n-{i}", accepted_at_ms=NOW + i), R1) for i in range(4)))
    late = replace(notice("u-1", accepted_at_ms=NOW + 10), priority=1)
    publish(runner, item(late, R1))
    snapshot = runner.call_sync(lambda s: s.queue_snapshot(NOW + 100, 10))
    assert snapshot.priorities == [(1, 1, NOW + 10), (0, 4, NOW)]
    lease(runner, R1, limit=100)  # in flight still waits for its receipt
    snapshot = runner.call_sync(lambda s: s.queue_snapshot(NOW + 100, 10))
    assert snapshot.priorities == [(1, 1, NOW + 10), (0, 4, NOW)]
