"""The store contract: every backend must pass this file unchanged.

Store methods run the way the broker runs them: on a StoreRunner's thread,
inside a transaction, each operation in its own savepoint. Backends are listed
in tests/store/conftest.py. No assertion here depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from broker.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from broker.store.api import (
    DEAD,
    DELIVERED,
    IN_FLIGHT,
    PENDING,
    AgencyRecord,
    DeliveryPlan,
    Event,
    LeasedDelivery,
    NoticeRecord,
    PublishOutcome,
    ReceiptRecord,
)
from broker.store.runner import StoreRunner
from tests.store.conftest import Backend, SqliteBackend

ORIG = "agency-orig"  # the originator of most notices
OTHER = "agency-other"  # another originator
R1, R2, R3 = "recipient-1", "recipient-2", "recipient-3"
NOW = 1_700_000_000_000
LEASE_MS = 30_000
MAX_ATTEMPTS = 3
DEAD_LETTERED = "dead_lettered"
TABLES = ("notices", "deliveries", "receipts", "events", "agencies")


# -- record builders ----------------------------------------------------------------------
def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def notice(
    notice_id: str = "n-1",
    version: int = 1,
    *,
    originator: str = ORIG,
    content: str = "",
    policy_version: str = "policy-1",
    accepted_at_ms: int = NOW,
) -> NoticeRecord:
    """A notice; `content` changes its bytes (and so its envelope digest)."""
    envelope = f"envelope|{originator}|{notice_id}|{version}|{content}".encode()
    return NoticeRecord(
        notice_id=notice_id,
        version=version,
        originator=originator,
        kind="alert",
        header_digest=sha(f"header|{originator}|{notice_id}|{version}|{content}"),
        envelope_digest=hashlib.sha256(envelope).digest(),
        envelope=envelope,
        created_at_ms=accepted_at_ms - 1_000,
        expires_at_ms=accepted_at_ms + 86_400_000,
        accepted_at_ms=accepted_at_ms,
        policy_version=policy_version,
        decisions='{"rules": []}',
    )


def item(
    n: NoticeRecord, *recipients: str, sections: tuple[str, ...] = ("summary",)
) -> tuple[NoticeRecord, list[DeliveryPlan]]:
    """A publish item: `n` for each recipient, with the same sections."""
    return n, [DeliveryPlan(r, sections) for r in recipients]


def receipt(
    n: NoticeRecord,
    recipient: str,
    *,
    proven: bytes | None = None,
    header_digest: bytes | None = None,
    at_ms: int = NOW,
    sections: tuple[str, ...] = ("summary",),
) -> ReceiptRecord:
    return ReceiptRecord(
        notice_id=n.notice_id,
        version=n.version,
        recipient=recipient,
        header_digest=n.header_digest if header_digest is None else header_digest,
        proven=proven if proven is not None else f"proof|{recipient}|{n.notice_id}".encode(),
        received_at_ms=at_ms,
        sections=sections,
    )


def agency(agency_id: str, *, status: str = "active", serial: int = 1) -> AgencyRecord:
    return AgencyRecord(
        id=agency_id,
        country="NL",
        roles=("publisher", "recipient"),
        groups=("eu", "benelux"),
        purposes=("fraud",),
        status=status,
        statement=f"statement|{agency_id}|{serial}".encode(),
        signing_key=sha(f"sign|{agency_id}|{serial}"),
        encryption_key=sha(f"enc|{agency_id}|{serial}"),
        serial=serial,
    )


# -- one store operation per runner call (one transaction each) ------------------------------
def publish(
    runner: StoreRunner, *items: tuple[NoticeRecord, Sequence[DeliveryPlan]]
) -> list[PublishOutcome]:
    return runner.call_sync(lambda s: s.publish(list(items)))


def lease(
    runner: StoreRunner, recipient: str, *, limit: int = 10, now_ms: int = NOW
) -> list[LeasedDelivery]:
    return runner.call_sync(lambda s: s.lease(recipient, limit, now_ms, LEASE_MS))


def release(
    runner: StoreRunner, recipient: str, *, now_ms: int = NOW, max_attempts: int = MAX_ATTEMPTS
) -> list[Event]:
    return runner.call_sync(lambda s: s.release(recipient, now_ms, max_attempts))


def expire(runner: StoreRunner, now_ms: int, *, max_attempts: int = MAX_ATTEMPTS) -> list[Event]:
    return runner.call_sync(lambda s: s.expire_leases(now_ms, max_attempts))


def record(runner: StoreRunner, *receipts: ReceiptRecord) -> list[tuple[str, int]]:
    return runner.call_sync(lambda s: s.record_receipts(list(receipts)))


def status(
    runner: StoreRunner, n: NoticeRecord | str, version: int = 0, *, originator: str = ORIG
) -> dict[tuple[str, int], Any]:
    """Delivery status keyed by (recipient, version); asserts the stored order."""
    notice_id = n if isinstance(n, str) else n.notice_id
    rows = runner.call_sync(lambda s: s.delivery_status(originator, notice_id, version))
    keys = [(r.recipient, r.version) for r in rows]
    assert keys == sorted(keys, key=lambda k: (k[1], k[0])), "ordered by version, recipient"
    return {(r.recipient, r.version): r for r in rows}


def events(runner: StoreRunner, who: str, after_seq: int = 0, limit: int = 100) -> list[Event]:
    return runner.call_sync(lambda s: s.events(who, after_seq, limit))


def pending(runner: StoreRunner) -> set[str]:
    recipients = runner.call_sync(lambda s: s.pending_recipients())
    assert len(recipients) == len(set(recipients)), "each recipient once"
    return set(recipients)


def counts(runner: StoreRunner, backend: Backend) -> dict[str, int]:
    return runner.call_sync(lambda s: {t: backend.count_rows(s, t) for t in TABLES})


def key(n: NoticeRecord) -> tuple[str, int]:
    return n.notice_id, n.version


# -- publish -----------------------------------------------------------------------------------
def test_publish_stores_notice_and_queues_one_delivery_per_plan(
    runner: StoreRunner, backend: Backend
) -> None:
    n = notice()
    plans = [DeliveryPlan(R2, ("summary",)), DeliveryPlan(R1, ("summary", "indicators"))]

    [outcome] = publish(runner, (n, plans))

    assert outcome == PublishOutcome(
        notice_id="n-1",
        version=1,
        header_digest=n.header_digest,
        duplicate=False,
        recipients=(R1, R2),  # sorted
        policy_version="policy-1",
    )
    assert counts(runner, backend) == {
        "notices": 1,
        "deliveries": 2,
        "receipts": 0,
        "events": 0,
        "agencies": 0,
    }
    rows = status(runner, n)
    assert set(rows) == {(R1, 1), (R2, 1)}
    assert rows[R1, 1].sections == ("summary", "indicators")
    assert rows[R2, 1].sections == ("summary",)
    for row in rows.values():
        assert (row.state, row.attempts, row.receipt) == (PENDING, 0, None)


def test_publish_batch_answers_each_item_in_order(runner: StoreRunner, backend: Backend) -> None:
    a, b, c = notice("n-a"), notice("n-b"), notice("n-c")

    outcomes = publish(runner, item(a, R3, R1), item(b, R2), item(c))

    assert [(o.notice_id, o.recipients, o.duplicate) for o in outcomes] == [
        ("n-a", (R1, R3), False),
        ("n-b", (R2,), False),
        ("n-c", (), False),
    ]
    assert counts(runner, backend)["notices"] == 3
    assert counts(runner, backend)["deliveries"] == 3
    assert status(runner, c) == {}  # known notice without recipients: no rows, no error


def test_republish_same_bytes_is_a_duplicate_and_stores_nothing(
    runner: StoreRunner, backend: Backend
) -> None:
    n = notice()
    [first] = publish(runner, item(n, R2, R1))
    before = counts(runner, backend)

    # The same envelope again, later and under a newer policy with another plan: the answer
    # is the stored one.
    again = notice(policy_version="policy-2", accepted_at_ms=NOW + 5_000)
    assert again.envelope_digest == n.envelope_digest
    [dup] = publish(runner, item(again, R3))

    assert dup == PublishOutcome(
        "n-1", 1, first.header_digest, True, (R1, R2), first.policy_version
    )
    assert counts(runner, backend) == before
    assert set(status(runner, n)) == {(R1, 1), (R2, 1)}
    assert lease(runner, R3) == []


def test_duplicate_and_new_notice_in_one_batch(runner: StoreRunner, backend: Backend) -> None:
    old, new = notice("n-old"), notice("n-new")
    publish(runner, item(old, R1))

    outcomes = publish(runner, item(old, R1), item(new, R2))

    assert [(o.notice_id, o.duplicate) for o in outcomes] == [("n-old", True), ("n-new", False)]
    assert counts(runner, backend)["notices"] == 2


def test_new_version_of_a_notice_is_a_new_notice(runner: StoreRunner) -> None:
    v1, v2 = notice(version=1), notice(version=2, content="corrected")
    publish(runner, item(v1, R1))

    [outcome] = publish(runner, item(v2, R1, R2))

    assert (outcome.version, outcome.duplicate, outcome.recipients) == (2, False, (R1, R2))
    assert set(status(runner, v1)) == {(R1, 1), (R1, 2), (R2, 2)}


def test_same_version_with_other_bytes_is_already_exists(
    runner: StoreRunner, backend: Backend
) -> None:
    n = notice()
    publish(runner, item(n, R1))
    before = counts(runner, backend)

    with pytest.raises(AlreadyExists):
        publish(runner, item(notice(content="tampered"), R1, R2))

    assert counts(runner, backend) == before
    assert set(status(runner, n)) == {(R1, 1)}
    [leased] = lease(runner, R1)
    assert leased.envelope == n.envelope


def test_conflict_in_second_item_rolls_back_the_first(
    runner: StoreRunner, backend: Backend
) -> None:
    n = notice()
    publish(runner, item(n, R1))
    before = counts(runner, backend)
    fresh = notice("n-fresh")

    with pytest.raises(AlreadyExists):
        publish(runner, item(fresh, R2), item(notice(content="tampered"), R1))

    assert counts(runner, backend) == before
    with pytest.raises(NotFound):
        status(runner, fresh)
    assert lease(runner, R2) == []
    assert pending(runner) == {R1}


# -- lease -------------------------------------------------------------------------------------
def test_lease_is_oldest_first_and_respects_limit(runner: StoreRunner) -> None:
    notices = [notice(f"n-{i}") for i in range(5)]
    for n in notices[:2]:
        publish(runner, item(n, R1))
    publish(runner, *(item(n, R1) for n in notices[2:]))

    first = lease(runner, R1, limit=2)
    second = lease(runner, R1, limit=2)
    third = lease(runner, R1, limit=2)

    leased = first + second + third
    assert [len(first), len(second), len(third)] == [2, 2, 1]
    assert [d.notice_id for d in leased] == [n.notice_id for n in notices]
    seqs = [d.seq for d in leased]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5
    assert lease(runner, R1) == []


def test_lease_returns_only_that_recipients_deliveries(runner: StoreRunner) -> None:
    a, b = notice("n-a"), notice("n-b")
    publish(runner, item(a, R1, R2), item(b, R2))

    assert [d.notice_id for d in lease(runner, R1)] == ["n-a"]
    assert lease(runner, R3) == []
    leased_r2 = lease(runner, R2)
    assert [d.notice_id for d in leased_r2] == ["n-a", "n-b"]
    assert {d.recipient for d in leased_r2} == {R2}


def test_lease_marks_in_flight_and_counts_attempts(runner: StoreRunner) -> None:
    n = notice()
    publish(runner, item(n, R1, sections=("summary", "indicators")))

    [d] = lease(runner, R1)

    assert d == LeasedDelivery(
        seq=d.seq,
        recipient=R1,
        notice_id="n-1",
        version=1,
        sections=("summary", "indicators"),
        attempt=1,
        envelope=n.envelope,
        accepted_at_ms=n.accepted_at_ms,  # + judicial: for the wait-per-priority metric
    )
    row = status(runner, n)[R1, 1]
    assert (row.state, row.attempts) == (IN_FLIGHT, 1)
    assert lease(runner, R1) == []  # in flight: not leased again
    assert pending(runner) == set()

    release(runner, R1)
    [again] = lease(runner, R1)
    assert (again.seq, again.attempt) == (d.seq, 2)
    release(runner, R1)
    assert lease(runner, R1)[0].attempt == 3


def test_leased_delivery_comes_back_only_after_its_lease_expires(runner: StoreRunner) -> None:
    n = notice()
    publish(runner, item(n, R1))
    [d] = lease(runner, R1, now_ms=NOW)

    assert lease(runner, R1, now_ms=NOW + LEASE_MS - 1) == []
    assert expire(runner, NOW + LEASE_MS) == []  # at the deadline: still leased
    assert lease(runner, R1, now_ms=NOW + LEASE_MS) == []

    assert expire(runner, NOW + LEASE_MS + 1) == []  # past it: requeued, no event
    [again] = lease(runner, R1, now_ms=NOW + LEASE_MS + 1)
    assert (again.seq, again.attempt) == (d.seq, 2)


# -- release -----------------------------------------------------------------------------------
def test_release_returns_in_flight_to_pending(runner: StoreRunner) -> None:
    a, b = notice("n-a"), notice("n-b")
    publish(runner, item(a, R1, R2), item(b, R1))
    lease(runner, R1)
    lease(runner, R2)

    assert release(runner, R1) == []

    rows_a, rows_b = status(runner, a), status(runner, b)
    assert (rows_a[R1, 1].state, rows_b[R1, 1].state) == (PENDING, PENDING)
    assert rows_a[R1, 1].attempts == 1  # attempts are kept
    assert rows_a[R2, 1].state == IN_FLIGHT  # another recipient's lease is untouched
    assert pending(runner) == {R1}
    assert [(d.notice_id, d.attempt) for d in lease(runner, R1)] == [("n-a", 2), ("n-b", 2)]


def test_release_dead_letters_deliveries_out_of_attempts(runner: StoreRunner) -> None:
    a, b = notice("n-a"), notice("n-b")
    publish(runner, item(a, R1))
    lease(runner, R1)  # a: attempt 1
    release(runner, R1, max_attempts=2)
    publish(runner, item(b, R1))
    lease(runner, R1)  # a: attempt 2, b: attempt 1

    returned = release(runner, R1, now_ms=NOW + 7, max_attempts=2)

    [ev] = returned
    assert ev == Event(
        seq=ev.seq,
        agency=ORIG,
        kind=DEAD_LETTERED,
        notice_id="n-a",
        version=1,
        recipient=R1,
        detail=ev.detail,
        at_ms=NOW + 7,
    )
    assert ev.seq > 0
    assert ev.detail
    assert status(runner, a)[R1, 1].state == DEAD
    assert status(runner, b)[R1, 1].state == PENDING
    assert events(runner, ORIG) == returned
    assert [d.notice_id for d in lease(runner, R1)] == ["n-b"]  # the dead one never returns


# -- expiry and events ------------------------------------------------------------------------
def test_expire_leases_only_touches_rows_past_their_deadline(runner: StoreRunner) -> None:
    early, late = notice("n-early"), notice("n-late")
    publish(runner, item(early, R1), item(late, R2))
    lease(runner, R1, now_ms=NOW)
    lease(runner, R2, now_ms=NOW + 10_000)

    assert expire(runner, NOW + LEASE_MS + 1) == []

    assert status(runner, early)[R1, 1].state == PENDING
    assert status(runner, late)[R2, 1].state == IN_FLIGHT
    assert pending(runner) == {R1}


def test_expire_leases_requeues_or_dead_letters(runner: StoreRunner) -> None:
    n, m = notice("n-1"), notice("n-2", originator=OTHER)
    publish(runner, item(n, R1, R2), item(m, R3))
    lease(runner, R1)  # n -> R1: attempt 1
    for _ in range(2):  # n -> R2 and m -> R3: leased and released twice
        lease(runner, R2)
        lease(runner, R3)
        release(runner, R2)
        release(runner, R3)
    lease(runner, R2)  # attempt 3
    lease(runner, R3)
    later = NOW + LEASE_MS + 1

    returned = expire(runner, later, max_attempts=3)

    assert sorted((e.agency, e.notice_id, e.recipient) for e in returned) == [
        (ORIG, "n-1", R2),
        (OTHER, "n-2", R3),
    ]
    assert all((e.kind, e.at_ms, e.version) == (DEAD_LETTERED, later, 1) for e in returned)
    rows = status(runner, n)
    assert (rows[R1, 1].state, rows[R2, 1].state) == (PENDING, DEAD)
    assert rows[R2, 1].attempts == 3
    assert status(runner, m, originator=OTHER)[R3, 1].state == DEAD
    assert pending(runner) == {R1}

    # Each originator sees its own events only; recipients see none.
    by_seq = {e.seq: e for e in returned}
    assert [e.recipient for e in events(runner, ORIG)] == [R2]
    assert [e.recipient for e in events(runner, OTHER)] == [R3]
    assert all(by_seq[e.seq] == e for e in events(runner, ORIG) + events(runner, OTHER))
    assert events(runner, R2) == []
    assert expire(runner, later + 1) == []  # nothing in flight any more


def test_events_paging_and_ack(runner: StoreRunner) -> None:
    notices = [notice(f"n-{i}") for i in range(3)]
    publish(runner, *(item(n, R1) for n in notices))
    publish(runner, item(notice("n-x", originator=OTHER), R1))
    lease(runner, R1)
    returned = release(runner, R1, max_attempts=1)
    mine = [e for e in returned if e.agency == ORIG]
    assert len(mine) == 3
    assert len(returned) == 4

    listed = events(runner, ORIG)
    assert listed == sorted(mine, key=lambda e: e.seq)
    assert events(runner, ORIG, limit=1) == listed[:1]
    assert events(runner, ORIG, after_seq=listed[0].seq) == listed[1:]

    runner.call_sync(lambda s: s.ack_events(ORIG, listed[1].seq))
    assert events(runner, ORIG) == listed[2:]
    runner.call_sync(lambda s: s.ack_events(R1, listed[2].seq))  # not R1's to ack
    assert events(runner, ORIG) == listed[2:]
    assert len(events(runner, OTHER)) == 1  # ORIG's ack does not reach OTHER's events

    runner.call_sync(lambda s: s.ack_events(ORIG, listed[2].seq))
    assert events(runner, ORIG) == []


# -- receipts ----------------------------------------------------------------------------------
def test_record_receipts_marks_delivered(runner: StoreRunner, backend: Backend) -> None:
    a, b = notice("n-a"), notice("n-b")
    publish(runner, item(a, R1, R2), item(b, R1))
    lease(runner, R1)

    accepted = record(runner, receipt(a, R1), receipt(b, R1))

    assert accepted == [key(a), key(b)]
    assert counts(runner, backend)["receipts"] == 2
    rows = status(runner, a)
    assert rows[R1, 1].state == DELIVERED
    assert rows[R1, 1].receipt == receipt(a, R1).proven
    assert (rows[R2, 1].state, rows[R2, 1].receipt) == (PENDING, None)
    assert expire(runner, NOW + 10 * LEASE_MS) == []
    assert release(runner, R1, max_attempts=1) == []
    assert lease(runner, R1) == []
    assert pending(runner) == {R2}


def test_record_receipts_is_idempotent(runner: StoreRunner, backend: Backend) -> None:
    n = notice()
    publish(runner, item(n, R1))
    lease(runner, R1)
    first = receipt(n, R1, proven=b"first proof")
    record(runner, first)

    again = record(runner, receipt(n, R1, proven=b"second proof", at_ms=NOW + 1))
    both = record(runner, first, first)

    assert again == [key(n)]
    assert both == [key(n), key(n)]
    assert counts(runner, backend)["receipts"] == 1
    row = status(runner, n)[R1, 1]
    assert (row.state, row.receipt) == (DELIVERED, b"first proof")


def test_receipt_counts_only_for_what_was_streamed(runner: StoreRunner, backend: Backend) -> None:
    n = notice()
    publish(runner, item(n, R1, sections=("summary", "indicators")))

    # Never streamed (pending): refused, and nothing changes.
    with pytest.raises(FailedPrecondition, match="never streamed"):
        record(runner, receipt(n, R1, sections=("indicators", "summary")))
    assert status(runner, n)[R1, 1].state == PENDING
    assert len(lease(runner, R1)) == 1
    # Streamed, but the receipt names other sections than those delivered.
    for wrong in [("summary",), ("indicators", "summary", "extra"), ()]:
        with pytest.raises(InvalidArgument, match="were delivered"):
            record(runner, receipt(n, R1, sections=wrong))
    assert counts(runner, backend)["receipts"] == 0
    assert status(runner, n)[R1, 1].state == IN_FLIGHT
    assert record(runner, receipt(n, R1, sections=("indicators", "summary"))) == [key(n)]
    assert status(runner, n)[R1, 1].state == DELIVERED


def test_receipt_for_a_lease_that_ran_out_is_refused(runner: StoreRunner) -> None:
    n = notice()
    publish(runner, item(n, R1))
    lease(runner, R1)
    expire(runner, NOW + LEASE_MS + 1)  # back to pending: it will be streamed again

    with pytest.raises(FailedPrecondition):
        record(runner, receipt(n, R1))
    assert len(lease(runner, R1, now_ms=NOW + LEASE_MS + 2)) == 1
    assert record(runner, receipt(n, R1)) == [key(n)]


def test_receipt_for_a_withheld_purged_or_dead_delivery_is_refused(
    runner: StoreRunner, backend: Backend
) -> None:
    withheld, purged, dead = notice("n-w"), notice("n-p"), notice("n-d")
    publish(runner, item(withheld, R1), item(purged, R1), item(dead, R1))
    leased = {d.notice_id: d for d in lease(runner, R1)}
    runner.call_sync(lambda s: s.withhold(leased["n-w"].seq, "policy changed", NOW))
    runner.call_sync(
        lambda s: s.conn.execute(
            "UPDATE deliveries SET state='purged' WHERE seq=?", (leased["n-p"].seq,)
        )
    )
    release(runner, R1, max_attempts=1)  # n-d is out of attempts: dead-lettered
    assert status(runner, dead)[R1, 1].state == DEAD

    for n, why in [(withheld, "withheld"), (purged, "purged"), (dead, "dead-lettered")]:
        with pytest.raises(FailedPrecondition, match=why):
            record(runner, receipt(n, R1))
    assert counts(runner, backend)["receipts"] == 0
    outcomes = runner.call_sync(
        lambda s: s.receive_receipts([receipt(withheld, R1), receipt(dead, R1)])
    )
    assert [type(o.error) for o in outcomes] == [FailedPrecondition, FailedPrecondition]
    assert counts(runner, backend)["receipts"] == 0


def test_receive_receipts_refuses_one_by_one(runner: StoreRunner, backend: Backend) -> None:
    a, b = notice("n-a"), notice("n-b")
    publish(runner, item(a, R1), item(b, R1))
    lease(runner, R1)

    outcomes = runner.call_sync(
        lambda s: s.receive_receipts(
            [receipt(a, R1), receipt(b, R1, header_digest=sha("other")), receipt(a, R1)]
        )
    )

    assert [(o.notice_id, o.first, type(o.error)) for o in outcomes] == [
        ("n-a", True, type(None)),
        ("n-b", False, InvalidArgument),
        ("n-a", False, type(None)),  # the same receipt twice in one call: one delivery
    ]
    assert outcomes[0].originator == ORIG
    assert counts(runner, backend)["receipts"] == 1
    assert status(runner, a)[R1, 1].state == DELIVERED
    assert status(runner, b)[R1, 1].state == IN_FLIGHT


def test_the_receipt_lookup_searches_by_notice_not_by_recipient(tmp_path: Path) -> None:
    """Searching the queue index by recipient would read every delivery the recipient
    ever had, for every batch of receipts."""
    from broker.store.sqlite import SqliteStore, receipt_lookup_sql

    store = SqliteStore.open(tmp_path / "plan.db")
    try:
        plan = store.conn.execute(
            "EXPLAIN QUERY PLAN " + receipt_lookup_sql(3), ("a", "b", "c", R1)
        ).fetchall()
    finally:
        store.close()
    steps = [str(row[3]) for row in plan]
    assert any("SEARCH d USING" in s and "(notice_id=?)" in s for s in steps), steps
    assert not any("recipient=?" in s for s in steps), steps


def test_a_large_batch_of_two_recipients_receipts_is_matched_one_to_one(
    runner: StoreRunner, backend: Backend
) -> None:
    """More notices than one lookup query takes, two recipients, two versions of a notice
    and a receipt for a version never sent: each receipt finds its own delivery only."""
    many = [notice(f"n-{i:03d}") for i in range(300)]
    publish(runner, *(item(n, R1, R2) for n in many))
    v2 = notice("n-000", version=2)
    publish(runner, item(v2, R1))
    lease(runner, R1, limit=400)
    lease(runner, R2, limit=400)
    batch = [receipt(n, r) for n in many for r in (R1, R2)] + [receipt(v2, R2)]
    outcomes = runner.call_sync(lambda s: s.receive_receipts(batch))
    assert [(o.notice_id, o.version, o.recipient, o.first) for o in outcomes[:-1]] == [
        (n.notice_id, 1, r, True) for n in many for r in (R1, R2)
    ]
    assert isinstance(outcomes[-1].error, NotFound)  # v2 was never addressed to R2
    assert counts(runner, backend)["receipts"] == 600
    assert status(runner, v2)[R1, 2].state == IN_FLIGHT


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(receipt(notice("n-unknown"), R1), id="unknown-notice"),
        pytest.param(receipt(notice(version=2), R1), id="unknown-version"),
        pytest.param(receipt(notice(), R2), id="other-recipient"),
    ],
)
def test_receipt_for_no_such_delivery_is_not_found(
    runner: StoreRunner, backend: Backend, bad: ReceiptRecord
) -> None:
    publish(runner, item(notice(), R1))

    with pytest.raises(NotFound):
        record(runner, bad)

    assert counts(runner, backend)["receipts"] == 0
    assert status(runner, "n-1")[R1, 1].state == PENDING


def test_receipt_with_wrong_header_digest_is_invalid(runner: StoreRunner, backend: Backend) -> None:
    n = notice()
    publish(runner, item(n, R1))
    lease(runner, R1)

    with pytest.raises(InvalidArgument):
        record(runner, receipt(n, R1, header_digest=sha("another header")))

    assert counts(runner, backend)["receipts"] == 0
    assert status(runner, n)[R1, 1].state == IN_FLIGHT


@pytest.mark.parametrize("error", [NotFound, InvalidArgument])
def test_failing_receipt_leaves_earlier_ones_of_the_call_unrecorded(
    runner: StoreRunner, backend: Backend, error: type[Exception]
) -> None:
    a, b = notice("n-a"), notice("n-b")
    publish(runner, item(a, R1), item(b, R1))
    lease(runner, R1)
    bad = (
        receipt(b, R2) if error is NotFound else receipt(b, R1, header_digest=sha("another header"))
    )

    with pytest.raises(error):
        record(runner, receipt(a, R1), bad)

    assert counts(runner, backend)["receipts"] == 0
    assert status(runner, a)[R1, 1].state == IN_FLIGHT
    assert status(runner, b)[R1, 1].state == IN_FLIGHT


# -- delivery status ---------------------------------------------------------------------------
def test_delivery_status_is_for_the_originator_only(runner: StoreRunner) -> None:
    n = notice()
    publish(runner, item(n, R1))

    assert set(status(runner, n)) == {(R1, 1)}
    assert set(status(runner, n, 1)) == {(R1, 1)}
    for who, notice_id, version in [
        (OTHER, "n-1", 0),  # someone else's notice
        (R1, "n-1", 0),  # a recipient is not the originator
        (ORIG, "n-unknown", 0),
        (ORIG, "n-1", 2),  # no such version
    ]:
        with pytest.raises(NotFound):
            status(runner, notice_id, version, originator=who)


def test_delivery_status_version_filter(runner: StoreRunner) -> None:
    v1, v2 = notice(version=1), notice(version=2, content="update")
    publish(runner, item(v1, R2, R1))
    publish(runner, item(v2, R3, R1))

    assert list(status(runner, v1, 0)) == [(R1, 1), (R2, 1), (R1, 2), (R3, 2)]
    assert list(status(runner, v1, 1)) == [(R1, 1), (R2, 1)]
    assert list(status(runner, v1, 2)) == [(R1, 2), (R3, 2)]


def test_delivery_status_reports_attempts_and_receipt(runner: StoreRunner) -> None:
    n = notice()
    publish(runner, item(n, R1, R2, sections=("summary", "indicators")))
    lease(runner, R1)
    lease(runner, R2)
    release(runner, R2)
    lease(runner, R2)
    record(
        runner, receipt(n, R1, proven=b"proven receipt bytes", sections=("indicators", "summary"))
    )

    rows = status(runner, n)

    assert rows[R1, 1].state == DELIVERED
    assert rows[R1, 1].attempts == 1
    assert rows[R1, 1].receipt == b"proven receipt bytes"
    assert rows[R1, 1].sections == ("summary", "indicators")
    assert (rows[R2, 1].state, rows[R2, 1].attempts, rows[R2, 1].receipt) == (IN_FLIGHT, 2, None)


# -- pending recipients ------------------------------------------------------------------------
def test_pending_recipients_follows_delivery_state(runner: StoreRunner) -> None:
    a, b = notice("n-a"), notice("n-b")
    assert pending(runner) == set()

    publish(runner, item(a, R1, R2), item(b, R3))
    assert pending(runner) == {R1, R2, R3}

    lease(runner, R1)
    assert pending(runner) == {R2, R3}
    release(runner, R1)
    assert pending(runner) == {R1, R2, R3}

    lease(runner, R2)
    record(runner, receipt(a, R2))  # delivered
    lease(runner, R3)
    release(runner, R3, max_attempts=1)  # dead
    assert pending(runner) == {R1}


# -- registry ----------------------------------------------------------------------------------
def test_agencies_round_trip_and_update(runner: StoreRunner, backend: Backend) -> None:
    assert runner.call_sync(lambda s: s.agencies()) == []
    b, a = agency("agency-b"), agency("agency-a")
    runner.call_sync(lambda s: (s.upsert_agency(b), s.upsert_agency(a)))

    assert sorted(runner.call_sync(lambda s: s.agencies()), key=lambda r: r.id) == [a, b]

    revoked = AgencyRecord(
        id="agency-a",
        country="BE",
        roles=("recipient",),
        groups=(),
        purposes=("fraud", "cyber"),
        status="revoked",
        statement=b"statement v2",
        signing_key=b"\x00" * 32,
        encryption_key=b"\xff" * 32,
        serial=2,
    )
    runner.call_sync(lambda s: s.upsert_agency(revoked))

    assert sorted(runner.call_sync(lambda s: s.agencies()), key=lambda r: r.id) == [revoked, b]
    assert counts(runner, backend)["agencies"] == 2


# -- durability and migrations -----------------------------------------------------------------
def test_reopening_keeps_the_data(runner: StoreRunner, backend: Backend) -> None:
    a, b = notice("n-a"), notice("n-b")
    runner.call_sync(lambda s: s.upsert_agency(agency(ORIG)))
    publish(runner, item(a, R1, R2), item(b, R1))
    lease(runner, R1)
    record(runner, receipt(a, R1))
    dead = release(runner, R1, max_attempts=1)  # b -> R1 dead-lettered
    before = {
        "counts": counts(runner, backend),
        "status_a": status(runner, a),
        "status_b": status(runner, b),
        "events": events(runner, ORIG),
        "agencies": runner.call_sync(lambda s: s.agencies()),
    }
    runner.close()

    reopened = StoreRunner(backend.open())
    try:
        after = {
            "counts": counts(reopened, backend),
            "status_a": status(reopened, a),
            "status_b": status(reopened, b),
            "events": events(reopened, ORIG),
            "agencies": reopened.call_sync(lambda s: s.agencies()),
        }
        assert after == before
        assert after["events"] == dead
        assert pending(reopened) == {R2}
        assert [d.notice_id for d in lease(reopened, R2)] == ["n-a"]
    finally:
        reopened.close()


def test_schema_is_at_the_latest_version(store: Any, backend: Backend) -> None:
    assert store.schema_version() == backend.latest_schema_version
    store.close()

    reopened = backend.open()
    assert reopened.schema_version() == backend.latest_schema_version


def test_schema_newer_than_the_code_refuses_to_open(runner: StoreRunner, backend: Backend) -> None:
    publish(runner, item(notice(), R1))
    runner.close()
    backend.force_schema_version(backend.latest_schema_version + 1)

    with pytest.raises(InvalidArgument):
        backend.open()

    # Refusing changed nothing: at the known version the data is all there.
    backend.force_schema_version(backend.latest_schema_version)
    reopened = StoreRunner(backend.open())
    try:
        assert set(status(reopened, "n-1")) == {(R1, 1)}
    finally:
        reopened.close()


def test_sqlite_uses_wal_and_full_sync(store: Any, backend: Backend) -> None:
    if not isinstance(backend, SqliteBackend):
        pytest.skip("SQLite journal settings")
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    # WAL is a property of the file, not just of this connection.
    other = sqlite3.connect(str(backend.path))
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == backend.latest_schema_version
    finally:
        other.close()


# -- the runner: group commit and isolation of operations ---------------------------------------
@contextlib.asynccontextmanager
async def one_group(runner: StoreRunner) -> AsyncIterator[None]:
    """Hold the runner's thread so that every call made in the block joins ONE group.

    A blocking operation occupies the thread; calls made inside the block queue up
    behind it; on exit we yield once to the event loop (so every task created in
    the block has queued its operation) and only then let the thread go.
    """
    started, gate = threading.Event(), threading.Event()

    def block(_store: Any) -> None:
        started.set()
        if not gate.wait(timeout=30):
            raise TimeoutError("the test never released the store thread")

    blocker = asyncio.ensure_future(runner.call(block))
    await asyncio.sleep(0)  # let the blocker task queue its operation
    try:
        assert started.wait(timeout=30), "the store thread never started the blocker"
        yield
        await asyncio.sleep(0)
    finally:
        gate.set()
        await blocker


async def test_concurrent_calls_are_group_committed(runner: StoreRunner, backend: Backend) -> None:
    notices = [notice(f"n-{i:02}") for i in range(40)]
    batches, operations = runner.batches, runner.operations

    async with one_group(runner):
        pending_results = asyncio.gather(
            *(runner.call(lambda s, n=n: s.publish([item(n, R1)])) for n in notices)
        )
    results = await pending_results

    assert [o.notice_id for [o] in results] == [n.notice_id for n in notices]
    assert not any(o.duplicate for [o] in results)
    assert runner.batches < runner.operations
    assert runner.operations - operations == len(notices) + 1  # + the blocker
    assert runner.batches - batches == 2  # the blocker's group, then all 40 together
    assert counts(runner, backend)["notices"] == 40
    assert [d.notice_id for d in lease(runner, R1, limit=100)] == [n.notice_id for n in notices]


async def test_failing_operation_does_not_disturb_its_group(
    runner: StoreRunner, backend: Backend
) -> None:
    n1, n2, n3 = notice("n-1"), notice("n-2"), notice("n-3")
    publish(runner, item(n1, R1))
    lease(runner, R1)
    batches = runner.batches

    def publish_then_fail(s: Any) -> None:
        s.publish([item(notice("n-half-done"), R3)])
        raise ValueError("the operation failed after writing")

    async with one_group(runner):
        group = asyncio.gather(
            runner.call(lambda s: s.publish([item(n2, R1)])),
            runner.call(lambda s: s.publish([item(notice(content="tampered"), R2)])),
            runner.call(publish_then_fail),
            runner.call(lambda s: s.record_receipts([receipt(n1, R1)])),
            runner.call(lambda s: s.publish([item(n3, R2)])),
            return_exceptions=True,
        )
    ok2, conflict, failed, receipted, ok3 = await group

    assert runner.batches - batches == 2  # the blocker, then these five in one group
    assert isinstance(conflict, AlreadyExists)
    assert isinstance(failed, ValueError)
    assert [o.notice_id for o in ok2] == ["n-2"]
    assert [o.notice_id for o in ok3] == ["n-3"]
    assert receipted == [key(n1)]
    assert counts(runner, backend)["notices"] == 3  # n-1, n-2, n-3; not the half-done one
    with pytest.raises(NotFound):
        status(runner, "n-half-done")
    assert status(runner, n1)[R1, 1].state == DELIVERED
    assert pending(runner) == {R1, R2}


async def test_close_finishes_queued_calls_then_refuses_new_ones(
    runner: StoreRunner, backend: Backend
) -> None:
    notices = [notice(f"n-{i}") for i in range(5)]
    async with one_group(runner):
        queued = asyncio.gather(
            *(runner.call(lambda s, n=n: s.publish([item(n, R1)])) for n in notices)
        )
    runner.close()  # returns once the queued calls have committed

    assert len(await queued) == 5
    with pytest.raises(Unavailable):
        await runner.call(lambda s: s.pending_recipients())
    with pytest.raises(Unavailable):
        runner.call_sync(lambda s: s.pending_recipients())
    runner.close()  # idempotent

    reopened = StoreRunner(backend.open())
    try:
        assert counts(reopened, backend)["notices"] == 5
    finally:
        reopened.close()


def test_notice_id_belongs_to_its_first_originator(runner: StoreRunner, backend: Backend) -> None:
    publish(runner, item(notice("n-owned", originator="FR-NCB"), "DE-BKA"))
    with pytest.raises(PermissionDenied):
        publish(runner, item(notice("n-owned", version=2, originator="DE-BKA"), "FR-NCB"))
    assert counts(runner, backend)["notices"] == 1


# -- review reminders --------------------------------------------------------------------------
def test_review_reminders_once_per_expiry_and_none_in_a_life_shorter_than_the_lead(
    runner: StoreRunner,
) -> None:
    """Kind "alert" with a review lead of 10 days: a notice expiring in 5 days whose life
    is longer than that is due now (once); one living 1 day has no review point and is
    marked so; one expiring in 100 days is not due yet; an extension re-arms."""
    from dataclasses import replace

    day = 86_400_000
    due = replace(notice("n-due"), created_at_ms=NOW - 30 * day, expires_at_ms=NOW + 5 * day)
    short = notice("n-short")  # created a second ago, expires in a day
    later = replace(notice("n-later"), expires_at_ms=NOW + 100 * day)
    publish(runner, item(due, R1), item(short, R1), item(later, R1))
    for n in (due, short, later):
        runner.call_sync(lambda s, n=n: s.track_notice(n.notice_id, n.expires_at_ms))
    leads = {"alert": 10, "other": 400}

    def reviews(now: int) -> list[str]:
        return [e.notice_id for e in runner.call_sync(lambda s: s.due_reviews(now, leads))]

    def marked() -> dict[str, int]:
        rows = runner.call_sync(
            lambda s: s.conn.execute("SELECT notice_id, review_sent FROM notice_state").fetchall()
        )
        return {str(r[0]): int(r[1]) for r in rows}

    assert reviews(NOW) == ["n-due"]
    assert reviews(NOW) == []  # once
    assert marked() == {"n-due": 1, "n-short": 1, "n-later": 0}
    assert runner.call_sync(lambda s: s.due_reviews(NOW, {})) == []  # no kind has a lead
    assert reviews(NOW + 91 * day) == ["n-later"]
    # An extension re-arms the reminder for the new expiry.
    runner.call_sync(
        lambda s: s.conn.execute(
            "UPDATE notice_state SET expires_at_ms=?, review_sent=0 WHERE notice_id='n-due'",
            (NOW + 50 * day,),
        )
    )
    assert reviews(NOW) == []
    assert reviews(NOW + 41 * day) == ["n-due"]
