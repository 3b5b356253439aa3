"""Store contract for what the crash trials rely on (docs/crash-safety.md): who may hold a
copy, superseded copies in flight, withholding at forwarding time, resent restriction
updates. Every backend must pass this file unchanged, like test_contract.py."""

from __future__ import annotations

import pytest

from broker.errors import FailedPrecondition
from broker.store.api import IN_FLIGHT, PENDING, PURGED, WITHHELD
from broker.store.runner import StoreRunner
from tests.store.test_contract import NOW, ORIG, R1, R2, R3, item, lease, notice, publish, release


def states(runner: StoreRunner, notice_id: str) -> dict[tuple[str, int], tuple[str, int]]:
    rows = runner.call_sync(lambda s: s.delivery_status(ORIG, notice_id, 0))
    return {(r.recipient, r.version): (r.state, r.attempts) for r in rows}


def test_a_copy_ever_sent_is_held_whatever_its_state_and_one_never_sent_is_not(
    runner: StoreRunner,
) -> None:
    n = notice()
    publish(runner, item(n, R1, R2, R3))
    # R1 was sent its copy, then its stream broke: pending again, still held.
    lease(runner, R1)
    release(runner, R1)
    # R2's copy was leased and withheld at once (not sent): not held.
    (leased,) = lease(runner, R2)
    runner.call_sync(lambda s: s.withhold(leased.seq, "no longer allowed", NOW, leased=True))
    assert states(runner, n.notice_id)[(R1, 1)] == (PENDING, 1)
    assert states(runner, n.notice_id)[(R2, 1)] == (WITHHELD, 0)
    state = runner.call_sync(lambda s: s.notice_state(n.notice_id))
    assert state.received == {R1}
    assert state.pending == {R3}
    # R1's redelivery is withheld in turn: it was sent once, so it is still held.
    (again,) = lease(runner, R1)
    runner.call_sync(lambda s: s.withhold(again.seq, "no longer allowed", NOW, leased=True))
    assert states(runner, n.notice_id)[(R1, 1)] == (WITHHELD, 1)
    assert runner.call_sync(lambda s: s.notice_state(n.notice_id)).received == {R1}


def test_withholding_a_queued_copy_keeps_its_attempts(runner: StoreRunner) -> None:
    n = notice()
    publish(runner, item(n, R1))
    lease(runner, R1)
    release(runner, R1)
    ((seq, recipient, *_rest),) = runner.call_sync(lambda s: s.queued_with_envelopes(n.notice_id))
    assert recipient == R1
    runner.call_sync(lambda s: s.withhold(seq, "restricted by the originator", NOW))
    assert states(runner, n.notice_id)[(R1, 1)] == (WITHHELD, 1)
    assert runner.call_sync(lambda s: s.notice_state(n.notice_id)).received == {R1}


def test_a_new_version_purges_copies_of_older_versions_in_flight(runner: StoreRunner) -> None:
    v1 = notice()
    publish(runner, item(v1, R1, R2))
    lease(runner, R1)  # in flight when version 2 arrives
    publish(runner, item(notice(version=2), R2))
    runner.call_sync(lambda s: s.purge_pending(v1.notice_id, 2, "superseded by version 2", NOW))
    got = states(runner, v1.notice_id)
    assert got[(R1, 1)] == (PURGED, 1)
    assert got[(R2, 1)] == (PURGED, 0)
    assert got[(R2, 2)] == (PENDING, 0)
    release(runner, R1)  # R1's next stream: nothing of version 1 goes out again
    assert lease(runner, R1) == []
    # Purging every version (a withdrawal) leaves copies in flight to the caller.
    v3 = notice("n-3")
    publish(runner, item(v3, R1))
    lease(runner, R1)
    runner.call_sync(lambda s: s.purge_pending(v3.notice_id, 0, "withdrawn", NOW))
    assert states(runner, v3.notice_id)[(R1, 1)] == (IN_FLIGHT, 1)


def test_a_restriction_update_resent_with_the_same_bytes_is_accepted_once(
    runner: StoreRunner,
) -> None:
    n = notice()
    publish(runner, item(n, R1))

    def put(sequence: int, signed: bytes) -> bool:
        return bool(
            runner.call_sync(
                lambda s: s.set_restrictions(n.notice_id, sequence, b"deny NL", signed, NOW)
            )
        )

    assert put(1, b"signed update 1") is True
    assert put(1, b"signed update 1") is False  # the retry of an answer lost
    with pytest.raises(FailedPrecondition):
        put(1, b"another update 1")
    assert put(2, b"signed update 2") is True
    assert runner.call_sync(lambda s: s.all_restriction_overrides()) == {n.notice_id: b"deny NL"}
