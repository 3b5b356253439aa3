"""The history checker on hand-made histories: a clean one passes, and each kind of
violation (lost, duplicated, unauthorised, inconsistent) is reported, so a trial that
passes cannot pass vacuously. Checkpoints are really signed and proofs really computed."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest

from broker.core import merkle
from broker.core.checkpoint import (
    Checkpoint,
    ed25519_public_key,
    format_checkpoint,
    format_verifier_key,
    sign_note,
)
from broker.errors import InvalidArgument
from broker.faults import events as ev
from broker.faults.history import check, outstanding
from broker.v1 import audit_pb2

ORIGIN = "sealed-notice-broker/broker"
SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
N1 = "00000000-0000-4000-8000-000000000001"
N2 = "00000000-0000-4000-8000-000000000002"
AUDIENCE = {"DE-BKA": ("case_facts", "identity"), "IT-BORDER": ("identity",)}


def note(size: int, root: bytes, seed: bytes = SEED) -> str:
    return sign_note(format_checkpoint(Checkpoint(ORIGIN, size, root)), ORIGIN, seed)


def notice_leaf(notice_id: str, version: int = 1) -> bytes:
    leaf = audit_pb2.LogLeaf(
        format=1,
        logged_at_ms=1,
        notice=audit_pb2.NoticePublished(notice_id=notice_id, version=version, originator="FR"),
    )
    return leaf.SerializeToString(deterministic=True)


def receipt_leaf(notice_id: str, recipient: str, version: int = 1) -> bytes:
    leaf = audit_pb2.LogLeaf(
        format=1,
        logged_at_ms=2,
        receipt=audit_pb2.DeliveryReceipt(
            notice_id=notice_id, version=version, recipient=recipient
        ),
    )
    return leaf.SerializeToString(deterministic=True)


@dataclass
class History:
    """A history written by hand, one entry a call, the clock ticking by one each time."""

    entries: list[ev.Entry] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    kept: int = 0

    def add(self, actor: str, event: ev.Event) -> History:
        self.entries.append(ev.Entry(len(self.entries) + 1, actor, event))
        return self

    def publish(
        self, notice_id: str, version: int = 1, audience: ev.Audience = AUDIENCE
    ) -> History:
        self.add("FR-NCB", ev.PublishAttempt(notice_id, version, audience))
        self.leaves.append(notice_leaf(notice_id, version))
        return self.add("FR-NCB", ev.PublishOk(notice_id, version))

    def receive(
        self, who: str, notice_id: str, version: int = 1, stream: int = 1, handle: bool = True
    ) -> History:
        sections = AUDIENCE.get(who, ("identity",))
        self.add(who, ev.Delivered(stream, notice_id, version, sections))
        if handle:
            self.add(who, ev.Handled(notice_id, version))
            self.leaves.append(receipt_leaf(notice_id, who, version))
        return self

    def act(self, action_id: str, notice_id: str, action: str, *told: str) -> History:
        self.add("FR-NCB", ev.ActAttempt(action_id, notice_id, action))
        return self.add("FR-NCB", ev.ActOk(action_id, told))

    def checkpoint(self, seed: bytes = SEED) -> History:
        """The auditor sees the log as it is now, with the proof from the one kept."""
        size = len(self.leaves)
        root = merkle.root(self.leaves)
        proof: list[bytes] = []
        if 0 < self.kept < size:
            proof = merkle.consistency_proof(self.kept, [merkle.leaf_hash(x) for x in self.leaves])
        self.add(
            "auditor",
            ev.CheckpointSeen(
                note(size, root, seed), self.kept or -1, tuple(p.hex() for p in proof)
            ),
        )
        self.kept = max(self.kept, size)
        return self

    def snapshot(self) -> History:
        cp = note(len(self.leaves), merkle.root(self.leaves))
        leaves = tuple(base64.b64encode(x).decode() for x in self.leaves)
        return self.add("auditor", ev.LogSnapshot(cp, leaves))

    def status(self, notice_id: str, who: str, state: str = "delivered") -> History:
        return self.add("FR-NCB", ev.Status(notice_id, 1, who, state))


def start() -> History:
    h = History()
    h.add("harness", ev.Meta(format_verifier_key(ORIGIN, ed25519_public_key(SEED)), seed=7))
    for who in ("DE-BKA", "IT-BORDER", "EU-HUB"):
        h.add(who, ev.StreamOpened(1))
    return h


def clean() -> History:
    h = start().publish(N1).checkpoint()
    h.add("harness", ev.Killed(100)).add("harness", ev.Restarted(101))
    h.add("DE-BKA", ev.StreamOpened(2)).add("IT-BORDER", ev.StreamOpened(2))
    h.receive("DE-BKA", N1, stream=2).receive("IT-BORDER", N1, stream=2).checkpoint()
    h.status(N1, "DE-BKA").status(N1, "IT-BORDER")
    return h.checkpoint().snapshot()


def only(h: History, category: str) -> str:
    """The one violation found, which must be of `category`; return its text."""
    report = check(h.entries)
    assert [v.category for v in report.violations] == [category], report.text()
    return report.violations[0].detail


# -- a clean history, and the format ----------------------------------------------------------
def test_a_clean_history_passes_and_says_what_it_covered() -> None:
    report = check(clean().entries)
    assert report.ok, report.text()
    assert report.counts() == {"lost": 0, "duplicated": 0, "unauthorised": 0, "inconsistent": 0}
    assert report.stats["publishes_acknowledged"] == 1
    assert report.stats["handled"] == 2
    assert report.stats["kills"] == report.stats["restarts"] == 1
    assert report.stats["checkpoints"] == 3 and report.stats["log_entries"] == 3
    assert not outstanding(clean().entries)


def test_history_round_trips_through_json_lines() -> None:
    h = clean()
    h.act("a1", N1, "withdraw", "DE-BKA")
    text = ev.dumps(h.entries)
    assert ev.loads(text) == h.entries
    assert ev.dumps(ev.loads(text)) == text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "history:1: not JSON"),
        ('{"t": 1, "actor": "x", "kind": "nope"}', "unknown kind 'nope'"),
        ('{"t": "1", "actor": "x", "kind": "handled"}', "integer t"),
        ('{"t": 1, "actor": "x", "kind": "handled", "notice_id": "n"}', "handled needs version"),
        (
            '{"t": 1, "actor": "x", "kind": "handled", "notice_id": "n", "version": "1"}',
            "handled.version must be",
        ),
        (
            '{"t": 1, "actor": "x", "kind": "handled", "notice_id": "n", "version": 1, "x": 2}',
            "has no field(s) x",
        ),
        (
            '{"t": 1, "actor": "x", "kind": "publish_attempt", "notice_id": "n", "version": 1,'
            ' "audience": {"A": "identity"}}',
            "publish_attempt.audience must be",
        ),
    ],
)
def test_malformed_history_lines_are_refused_with_their_line(line: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match="history:1") as info:
        ev.loads(line)
    assert message in str(info.value)


# -- lost ----------------------------------------------------------------------------------
def test_an_acknowledged_publish_never_handed_over_is_lost() -> None:
    h = start().publish(N1).receive("DE-BKA", N1)
    assert "IT-BORDER never received" in only(h, "lost")
    assert outstanding(h.entries).deliveries == {("IT-BORDER", N1, 1)}


def test_a_publish_that_failed_owes_nothing() -> None:
    h = start().add("FR-NCB", ev.PublishAttempt(N1, 1, AUDIENCE))
    h.add("FR-NCB", ev.PublishFailed(N1, 1, "UNAVAILABLE: broker down"))
    assert check(h.entries).ok
    # ... but whatever of it did arrive must still have been sealed for its recipient.
    h.receive("EU-HUB", N1)
    assert "sealed for DE-BKA, IT-BORDER only" in only(h, "unauthorised")


def test_a_withdrawal_even_unacknowledged_excuses_what_it_would_purge() -> None:
    h = start().publish(N1).receive("DE-BKA", N1)
    h.add("FR-NCB", ev.ActAttempt("a1", N1, "withdraw"))
    h.add("FR-NCB", ev.ActFailed("a1", "DEADLINE_EXCEEDED"))
    assert check(h.entries).ok


def test_a_newer_version_or_a_restriction_excuses_an_older_copy() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).publish(N1, 2).receive("DE-BKA", N1, 2)
    h.receive("IT-BORDER", N1, 2)
    assert check(h.entries).ok  # IT-BORDER never got v1: v2 replaced it
    h = start().publish(N1).receive("DE-BKA", N1)
    h.add("FR-NCB", ev.RestrictAttempt(N1, 1, ("IT-BORDER",)))
    assert check(h.entries).ok


def test_a_suspension_excuses_until_it_is_resumed() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).act("s1", N1, "suspend", "DE-BKA")
    h.add("DE-BKA", ev.ControlReceived(1, "s1", N1, "suspend"))
    assert check(h.entries).ok
    h.act("r1", N1, "resume", "DE-BKA").add("DE-BKA", ev.ControlReceived(1, "r1", N1, "resume"))
    assert "IT-BORDER never received" in only(h, "lost")


def test_an_action_promised_to_a_recipient_but_never_received_is_lost() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.act("a1", N1, "withdraw", "DE-BKA", "IT-BORDER")
    h.add("DE-BKA", ev.ControlReceived(1, "a1", N1, "withdraw"))
    assert "IT-BORDER was never told of the acknowledged withdraw a1" in only(h, "lost")
    assert outstanding(h.entries).controls == {("IT-BORDER", "a1")}


def test_a_holder_the_broker_did_not_even_promise_to_tell_is_lost() -> None:
    # IT-BORDER's application holds the notice; the broker's answer leaves it out.
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.act("a1", N1, "withdraw", "DE-BKA").add("DE-BKA", ev.ControlReceived(1, "a1", N1, "withdraw"))
    assert "IT-BORDER was never told" in only(h, "lost")


def test_a_flag_must_reach_the_originator_and_the_other_holders() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.add("DE-BKA", ev.ActAttempt("f1", N1, "flag")).add("DE-BKA", ev.ActOk("f1"))
    h.add("FR-NCB", ev.ControlReceived(1, "f1", N1, "flag"))
    assert "IT-BORDER was never told of the acknowledged flag" in only(h, "lost")
    h.add("IT-BORDER", ev.ControlReceived(1, "f1", N1, "flag"))
    assert check(h.entries).ok


def test_a_recipient_left_out_of_a_new_version_must_be_told_to_delete() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.publish(N1, 2, {"DE-BKA": AUDIENCE["DE-BKA"]}).receive("DE-BKA", N1, 2)
    assert f"IT-BORDER was never told of the acknowledged {N1}/v2/superseded" in only(h, "lost")
    h.add("IT-BORDER", ev.ControlReceived(1, f"{N1}/v2/superseded", N1, "superseded", 2))
    assert check(h.entries).ok


def test_a_copy_handed_over_but_never_receipted_is_lost() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.status(N1, "DE-BKA").status(N1, "IT-BORDER", "in_flight")
    assert "IT-BORDER was handed" in only(h, "lost") and "broker says in_flight" in only(h, "lost")


# -- duplicated ----------------------------------------------------------------------------
def test_an_application_handed_a_notice_twice_is_a_duplicate() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.add("IT-BORDER", ev.StreamOpened(2)).receive("IT-BORDER", N1, stream=2)
    assert "IT-BORDER's application saw" in only(h, "duplicated")


def test_a_redelivery_the_inbox_absorbs_is_not_a_duplicate() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.add("IT-BORDER", ev.StreamOpened(2)).receive("IT-BORDER", N1, stream=2, handle=False)
    assert check(h.entries).ok


def test_an_action_handed_to_the_application_twice_is_a_duplicate() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.act("a1", N1, "withdraw", "DE-BKA", "IT-BORDER")
    for who in ("DE-BKA", "IT-BORDER"):
        h.add(who, ev.ControlReceived(1, "a1", N1, "withdraw"))
        h.add(who, ev.ActionHandled("a1", N1, "withdraw"))
    h.add("DE-BKA", ev.ActionHandled("a1", N1, "withdraw"))
    assert "DE-BKA's application saw action a1 2 times" in only(h, "duplicated")


# -- unauthorised --------------------------------------------------------------------------
def test_a_notice_to_someone_outside_its_audience_is_unauthorised() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1).receive("EU-HUB", N1)
    assert "EU-HUB was sent" in only(h, "unauthorised")


def test_a_section_not_sealed_for_the_recipient_is_unauthorised() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.add("IT-BORDER", ev.Delivered(1, N1, 1, ("case_facts", "identity")))
    assert "section(s) case_facts not sealed for it" in only(h, "unauthorised")


def test_a_version_nobody_published_is_unauthorised() -> None:
    h = start().receive("DE-BKA", N2, handle=False)
    assert "nobody published" in only(h, "unauthorised")


def test_a_copy_on_a_stream_opened_after_the_withdrawal_is_unauthorised() -> None:
    h = start().publish(N1).receive("DE-BKA", N1)
    h.act("a1", N1, "withdraw", "DE-BKA").add("DE-BKA", ev.ControlReceived(1, "a1", N1, "withdraw"))
    h.add("IT-BORDER", ev.StreamOpened(2)).receive("IT-BORDER", N1, stream=2, handle=False)
    assert "opened after the withdraw was committed" in only(h, "unauthorised")


def test_a_copy_leased_before_the_withdrawal_may_still_arrive_after_it() -> None:
    # IT-BORDER's stream was opened before the withdrawal: its copy may have been leased
    # then. It arrives after the acknowledgement, and the broker owes IT-BORDER the action.
    h = start().publish(N1).receive("DE-BKA", N1)
    h.act("a1", N1, "withdraw", "DE-BKA", "IT-BORDER")
    h.receive("IT-BORDER", N1, handle=False)
    for who in ("DE-BKA", "IT-BORDER"):
        h.add(who, ev.ControlReceived(1, "a1", N1, "withdraw"))
    assert check(h.entries).ok


def test_a_copy_after_the_recipient_applied_the_withdrawal_is_unauthorised() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.add("FR-NCB", ev.ActAttempt("a1", N1, "withdraw"))  # its answer never came
    h.add("FR-NCB", ev.ActFailed("a1", "UNAVAILABLE"))
    h.add("IT-BORDER", ev.ControlReceived(1, "a1", N1, "withdraw"))
    h.receive("IT-BORDER", N1, handle=False)
    assert "after it had applied the withdraw" in only(h, "unauthorised")


def test_an_old_version_after_a_new_one_left_the_recipient_out_is_unauthorised() -> None:
    h = start().publish(N1).receive("DE-BKA", N1)
    h.publish(N1, 2, {"DE-BKA": AUDIENCE["DE-BKA"]}).receive("DE-BKA", N1, 2)
    h.add("IT-BORDER", ev.StreamOpened(2)).receive("IT-BORDER", N1, stream=2)
    assert "opened after v2, which no longer shares it so" in only(h, "unauthorised")


def test_a_copy_after_a_restriction_excluded_the_recipient_is_unauthorised() -> None:
    h = start().publish(N1).receive("DE-BKA", N1)
    h.add("FR-NCB", ev.RestrictAttempt(N1, 1, ("IT-BORDER",))).add("FR-NCB", ev.RestrictOk(N1, 1))
    h.add("IT-BORDER", ev.StreamOpened(2)).receive("IT-BORDER", N1, stream=2)
    assert "restriction update 1 excluded it" in only(h, "unauthorised")
    # A later update that lets it in again, committed before the stream opened, allows it.
    h = start().publish(N1).receive("DE-BKA", N1)
    for sequence, denied in ((1, ("IT-BORDER",)), (2, ())):
        h.add("FR-NCB", ev.RestrictAttempt(N1, sequence, denied))
        h.add("FR-NCB", ev.RestrictOk(N1, sequence))
    h.add("IT-BORDER", ev.StreamOpened(2)).receive("IT-BORDER", N1, stream=2)
    assert check(h.entries).ok


def test_a_copy_while_suspended_is_unauthorised_unless_a_resume_came_first() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).act("s1", N1, "suspend", "DE-BKA")
    h.add("DE-BKA", ev.ControlReceived(1, "s1", N1, "suspend"))
    h.add("IT-BORDER", ev.StreamOpened(2)).receive("IT-BORDER", N1, stream=2)
    assert "suspended, and never resumed" in only(h, "unauthorised")
    h = start().publish(N1).receive("DE-BKA", N1).act("s1", N1, "suspend", "DE-BKA")
    h.add("DE-BKA", ev.ControlReceived(1, "s1", N1, "suspend"))
    h.act("r1", N1, "resume", "DE-BKA").add("DE-BKA", ev.ControlReceived(1, "r1", N1, "resume"))
    h.add("IT-BORDER", ev.StreamOpened(2)).receive("IT-BORDER", N1, stream=2)
    assert check(h.entries).ok


# -- inconsistent --------------------------------------------------------------------------
def test_a_fork_is_inconsistent() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1).checkpoint()
    h.leaves[0] = notice_leaf(N2)  # the same size, another history
    h.kept = 0
    h.checkpoint()
    assert "FORK" in only(h, "inconsistent")


def test_a_rollback_is_inconsistent() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1).checkpoint()
    del h.leaves[1:]  # a restarted broker that lost committed entries
    h.checkpoint()
    assert "rollback: checkpoint 1 after checkpoint 3" in only(h, "inconsistent")


def test_an_extension_whose_proof_fails_is_inconsistent() -> None:
    h = start().publish(N1).checkpoint().receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.leaves[0] = notice_leaf(N2)  # the old entry rewritten under the new checkpoint
    h.checkpoint()
    assert "not consistent" in only(h, "inconsistent") or "FORK" in only(h, "inconsistent")


def test_a_checkpoint_under_another_key_is_inconsistent() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.checkpoint(seed=OTHER_SEED)
    assert "does not verify" in only(h, "inconsistent")


def test_an_acknowledged_publish_missing_from_the_log_is_inconsistent() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.leaves.remove(notice_leaf(N1))
    h.checkpoint().snapshot()
    assert f"acknowledged {N1} v1 is not in the log" in only(h, "inconsistent")


def test_a_snapshot_whose_entries_do_not_hash_to_its_checkpoint_is_inconsistent() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1).checkpoint()
    cp = note(len(h.leaves), merkle.root(h.leaves))
    leaves = tuple(base64.b64encode(x).decode() for x in [*h.leaves[:-1], notice_leaf(N2)])
    h.add("auditor", ev.LogSnapshot(cp, leaves))
    assert "do not hash to checkpoint 3" in only(h, "inconsistent")


def test_a_receipt_logged_twice_or_not_at_all_is_inconsistent() -> None:
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.leaves.append(receipt_leaf(N1, "DE-BKA"))
    h.checkpoint().snapshot()
    assert "DE-BKA's receipt for" in only(h, "inconsistent") and "2 times" in only(
        h, "inconsistent"
    )
    h = start().publish(N1).receive("DE-BKA", N1).receive("IT-BORDER", N1)
    h.leaves.remove(receipt_leaf(N1, "IT-BORDER"))
    h.status(N1, "DE-BKA").status(N1, "IT-BORDER").checkpoint().snapshot()
    assert "IT-BORDER's receipt for" in only(h, "inconsistent")


def test_checkpoints_without_the_log_key_cannot_pass() -> None:
    h = History().publish(N1).checkpoint()
    h.receive("DE-BKA", N1).receive("IT-BORDER", N1)
    assert "without the log key" in only(h, "inconsistent")
