"""What fair sharing reads from the store, on every backend (broker/store/quota_reads.py):
the stored outcome a re-publish is answered from, and the queued deliveries per originator."""

from __future__ import annotations

from broker.store.api import PublishOutcome
from broker.store.runner import StoreRunner
from tests.store.test_contract import (
    ORIG,
    OTHER,
    R1,
    R2,
    item,
    key,
    lease,
    notice,
    publish,
    receipt,
    record,
)


def test_stored_publishes_answer_as_the_duplicate_publish_does(runner: StoreRunner) -> None:
    a, b = notice("n-a"), notice("n-b", originator=OTHER)
    publish(runner, item(a, R2, R1), item(b, R1))
    stored = runner.call_sync(lambda s: s.stored_publishes([key(a), key(b), ("n-none", 1)]))
    assert set(stored) == {key(a), key(b)}
    again = publish(runner, item(a, R1, R2))[0]
    assert stored[key(a)].outcome == again  # what the store itself answers a duplicate
    assert stored[key(a)].outcome == PublishOutcome(
        "n-a", 1, a.header_digest, True, (R1, R2), a.policy_version
    )
    assert stored[key(a)].envelope_digest == a.envelope_digest
    assert (stored[key(a)].originator, stored[key(b)].originator) == (ORIG, OTHER)


def test_stored_publishes_of_many_keys_and_none(runner: StoreRunner) -> None:
    notices = [notice(f"n-{i}") for i in range(450)]  # more than one query's worth
    publish(runner, *(item(n, R1) for n in notices))
    stored = runner.call_sync(lambda s: s.stored_publishes([key(n) for n in notices]))
    assert len(stored) == 450 and all(v.outcome.recipients == (R1,) for v in stored.values())
    assert runner.call_sync(lambda s: s.stored_publishes([])) == {}


def test_queued_deliveries_count_pending_and_in_flight_per_originator(
    runner: StoreRunner,
) -> None:
    assert runner.call_sync(lambda s: s.queued_by_originator()) == {}
    a, b, c = notice("n-a"), notice("n-b"), notice("n-c", originator=OTHER)
    publish(runner, item(a, R1, R2), item(b, R1), item(c, R2))
    assert runner.call_sync(lambda s: s.queued_by_originator()) == {ORIG: 3, OTHER: 1}
    lease(runner, R1)  # in flight still counts
    assert runner.call_sync(lambda s: s.queued_by_originator()) == {ORIG: 3, OTHER: 1}
    record(runner, receipt(a, R1), receipt(b, R1))  # delivered no longer counts
    assert runner.call_sync(lambda s: s.queued_by_originator()) == {ORIG: 1, OTHER: 1}
