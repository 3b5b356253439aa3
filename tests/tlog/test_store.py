"""The transparency log in the store, on every backend (SQLite and PostgreSQL): appends
inside group commits, proofs, exactly-once logging of publishes, receipts, events,
activations and registry changes."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.core import logleaf, merkle
from broker.core.auditing import CheckpointError, open_log_checkpoint
from broker.core.checkpoint import Signer, open_checkpoint
from broker.core.pqnote import PQSigner, pq_key_name
from broker.errors import AlreadyExists
from broker.store.api import AgencyRecord, DeliveryPlan, NoticeRecord, ReceiptRecord, Store
from broker.store.runner import StoreRunner
from broker.store.tlog import node_id
from broker.v1 import audit_pb2, notice_pb2
from tests.store.conftest import BACKENDS, Backend, open_backend

NOW = 1_800_000_000_000
SIGNER = Signer("sealed-notice-broker/test", b"\x05" * 32)
PQ_SIGNER = PQSigner(pq_key_name(SIGNER.name), b"\x06" * 32)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = open_backend(request.param, tmp_path)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def runner(backend: Backend) -> Iterator[StoreRunner]:
    r = StoreRunner(backend.open())
    try:
        yield r
    finally:
        r.close()


def call(runner: StoreRunner, fn: Any) -> Any:
    return runner.call_sync(fn)


def lifecycle(i: int) -> audit_pb2.LogLeaf:
    return logleaf.lifecycle(
        kind="test",
        notice_id=f"n-{i}",
        version=1,
        originator="FR-NCB" if i % 2 else "DE-BKA",
        recipient="IT-BORDER",
        detail=str(i),
        logged_at_ms=NOW,
    )


def notice(notice_id: str, originator: str = "FR-NCB", content: str = "") -> NoticeRecord:
    envelope = f"{notice_id}|{content}".encode()
    record = {
        "policy_version": "p" * 64,
        "notice": {"sections": ["identity", "photos"]},
        "recipients": [],
        "decisions": [
            {"recipient": r, "section": s, "allowed": (r, s) != ("IT-BORDER", "photos")}
            for r in ("DE-BKA", "IT-BORDER")
            for s in ("identity", "photos")
        ],
    }
    return NoticeRecord(
        notice_id=notice_id,
        version=1,
        originator=originator,
        kind="interpol.red",
        header_digest=hashlib.sha256(b"h" + envelope).digest(),
        envelope_digest=hashlib.sha256(envelope).digest(),
        envelope=envelope,
        created_at_ms=NOW,
        expires_at_ms=NOW + 1,
        accepted_at_ms=NOW,
        policy_version="p" * 64,
        decisions=json.dumps(record, sort_keys=True),
    )


PLANS = [DeliveryPlan("DE-BKA", ("identity", "photos")), DeliveryPlan("IT-BORDER", ("identity",))]


def receipt(n: NoticeRecord, recipient: str, tag: str = "") -> ReceiptRecord:
    sections = next(p.sections for p in PLANS if p.recipient == recipient)
    r = notice_pb2.Receipt(
        notice_id=n.notice_id,
        version=1,
        recipient=recipient,
        header_digest=n.header_digest,
        sections=sections,
        received_at_ms=NOW,
    )
    proven = notice_pb2.ProvenReceipt(
        receipt=r.SerializeToString(), signer=recipient, batch_root=tag.encode().ljust(32, b".")
    )
    return ReceiptRecord(
        n.notice_id, 1, recipient, n.header_digest, proven.SerializeToString(), NOW, sections
    )


def streamed(runner: StoreRunner, *recipients: str) -> None:
    """Lease every pending delivery to `recipients`: receipts count only for what was sent."""
    for r in recipients:
        call(runner, lambda s, r=r: s.lease(r, 100, NOW, 30_000))


def kinds(runner: StoreRunner) -> list[str]:
    entries, _ = call(runner, lambda s: s.tlog_entries(0, s.tlog_size(), 10_000, None))
    return [logleaf.kind_of(logleaf.parse(leaf)) for _, leaf in entries]


def test_appends_in_group_commits_give_the_rfc9162_tree(
    runner: StoreRunner, backend: Backend
) -> None:
    leaves = [lifecycle(i) for i in range(3000)]
    rng = random.Random(1)
    start = 0
    while start < len(leaves):
        n = rng.randint(1, 120)
        chunk = leaves[start : start + n]
        assert call(runner, lambda s, c=chunk: s.tlog_append(c)) == list(
            range(start, start + len(chunk))
        )
        start += len(chunk)
    hashes = [merkle.leaf_hash(logleaf.serialize(leaf)) for leaf in leaves]
    size = len(leaves)
    root = call(runner, lambda s: s.tlog_root(size))
    assert root == merkle.root_from_hashes(hashes)
    for _ in range(60):
        index, old = rng.randrange(size), rng.randrange(1, size + 1)
        proof = call(runner, lambda s, i=index: s.tlog_inclusion(i, size))
        merkle.verify_inclusion(index, size, hashes[index], proof, root)
        proof = call(runner, lambda s, o=old: s.tlog_consistency(o, size))
        old_root = merkle.root_from_hashes(hashes[:old])
        merkle.verify_consistency(old, size, old_root, root, proof)
    runner.close()
    reopened = StoreRunner(backend.open())
    try:
        assert call(reopened, lambda s: s.tlog_size()) == size
        assert call(reopened, lambda s: s.tlog_root(size)) == root
        assert backend.count_rows_now(reopened, "tlog_nodes") == sum(
            size >> level for level in range(size.bit_length())
        )
        stored = call(
            reopened,
            lambda s: s.conn.execute(
                "SELECT hash FROM tlog_nodes WHERE id=?", (node_id(0, 7),)
            ).fetchone()[0],
        )
        assert bytes(stored) == hashes[7]
    finally:
        reopened.close()


def test_a_failed_operation_leaves_no_leaf(runner: StoreRunner) -> None:
    call(runner, lambda s: s.tlog_append([lifecycle(0)]))

    def fails(s: Store) -> None:
        s.tlog_append([lifecycle(1), lifecycle(2)])
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        call(runner, fails)
    assert call(runner, lambda s: s.tlog_size()) == 1
    call(runner, lambda s: s.tlog_append([lifecycle(3)]))
    size = call(runner, lambda s: s.tlog_size())
    hashes = [merkle.leaf_hash(logleaf.serialize(lifecycle(i))) for i in (0, 3)]
    assert call(runner, lambda s: s.tlog_root(size)) == merkle.root_from_hashes(hashes)


def test_proof_requests_outside_the_log_are_refused(runner: StoreRunner) -> None:
    call(runner, lambda s: s.tlog_append([lifecycle(i) for i in range(4)]))
    from broker.errors import InvalidArgument, NotFound

    for bad in (lambda s: s.tlog_inclusion(4, 4), lambda s: s.tlog_inclusion(0, 5)):
        with pytest.raises(InvalidArgument):
            call(runner, bad)
    with pytest.raises(InvalidArgument):
        call(runner, lambda s: s.tlog_consistency(0, 4))
    with pytest.raises(NotFound):
        call(runner, lambda s: s.tlog_entry(9, None))


def test_publish_is_logged_once(runner: StoreRunner) -> None:
    n = notice("n-1")
    first = call(runner, lambda s: s.publish_logged([(n, PLANS)], NOW))
    assert not first[0].duplicate
    assert kinds(runner) == ["notice", "decision", "withheld"]
    again = call(runner, lambda s: s.publish_logged([(n, PLANS)], NOW))
    assert again[0].duplicate
    with pytest.raises(AlreadyExists):
        call(runner, lambda s: s.publish_logged([(notice("n-1", content="x"), PLANS)], NOW))
    assert call(runner, lambda s: s.tlog_size()) == 3
    entries, _ = call(runner, lambda s: s.tlog_entries(0, 3, 10, None))
    decision = logleaf.parse(entries[1][1]).decision
    assert decision.decisions_digest == hashlib.sha256(n.decisions.encode()).digest()
    w = logleaf.parse(entries[2][1]).withheld
    assert (w.recipient, list(w.sections), w.reason) == (
        "IT-BORDER",
        ["photos"],
        logleaf.DENIED_BY_POLICY,
    )


def test_a_receipt_is_logged_once_however_often_it_comes(runner: StoreRunner) -> None:
    n = notice("n-1")
    call(runner, lambda s: s.publish_logged([(n, PLANS)], NOW))
    before = call(runner, lambda s: s.tlog_size())
    streamed(runner, "DE-BKA")
    first = receipt(n, "DE-BKA", "first")
    call(runner, lambda s: s.record_receipts_logged([first, first], NOW))
    call(runner, lambda s: s.record_receipts_logged([receipt(n, "DE-BKA", "second")], NOW))
    assert call(runner, lambda s: s.tlog_size()) == before + 1
    leaf = logleaf.parse(call(runner, lambda s: s.tlog_entry(before, None))).receipt
    proven = notice_pb2.ProvenReceipt.FromString(first.proven)
    assert leaf.batch_root == proven.batch_root  # the first receipt, as stored
    assert leaf.originator == "FR-NCB"
    assert leaf.receipt_digest == hashlib.sha256(proven.receipt).digest()


def test_entries_an_agency_may_see(runner: StoreRunner) -> None:
    fr, de = notice("n-fr"), notice("n-de", originator="DE-BKA")
    call(runner, lambda s: s.publish_logged([(fr, PLANS)], NOW))
    call(
        runner, lambda s: s.publish_logged([(de, [DeliveryPlan("IT-BORDER", ("identity",))])], NOW)
    )
    streamed(runner, "IT-BORDER")
    call(runner, lambda s: s.record_receipts_logged([receipt(fr, "IT-BORDER")], NOW))
    call(runner, lambda s: s.record_receipts_logged([receipt(de, "IT-BORDER")], NOW))
    size = call(runner, lambda s: s.tlog_size())

    def seen(agency: str | None, limit: int = 100) -> list[str]:
        entries, _ = call(runner, lambda s: s.tlog_entries(0, size, limit, agency))
        return [logleaf.describe(logleaf.parse(leaf)).split(" ")[0] for _, leaf in entries]

    assert seen("FR-NCB") == ["notice", "decision", "withheld", "receipt"]
    assert seen("DE-BKA") == ["notice", "decision", "withheld", "receipt"]
    assert seen("IT-BORDER") == ["receipt", "receipt"]  # never what was withheld from it
    assert len(seen(None)) == size
    entries, nxt = call(runner, lambda s: s.tlog_entries(0, size, 2, "FR-NCB"))
    assert [i for i, _ in entries] == [0, 1] and nxt == 2
    with pytest.raises(Exception, match="no log entry"):
        call(runner, lambda s: s.tlog_entry(0, "IT-BORDER"))


def agency(agency_id: str, status: str = "active") -> AgencyRecord:
    return AgencyRecord(agency_id, "FR", ("police",), (), (), status, b"stmt", b"k", b"e", 1)


def test_events_activations_and_registry_are_logged_exactly_once(runner: StoreRunner) -> None:
    n = notice("n-1")
    call(runner, lambda s: s.publish_logged([(n, PLANS)], NOW))
    call(runner, lambda s: s.lease("DE-BKA", 10, NOW, 10))
    events = call(runner, lambda s: s.expire_leases(NOW + 100, 1))
    assert [e.kind for e in events] == ["dead_lettered"]
    call(runner, lambda s: s.upsert_agency(agency("FR-NCB")))

    def activate(s: Store) -> None:
        s.put_bundle("v1", b"bundle")
        s.activate_bundle("v1", b"signed", "urn:broker:admin:ops", NOW, "first", 1)

    call(runner, activate)
    before = call(runner, lambda s: s.tlog_size())
    assert call(runner, lambda s: s.tlog_sync(NOW)) == 3
    assert call(runner, lambda s: s.tlog_sync(NOW)) == 0
    new = kinds(runner)[before:]
    assert new == ["policy_activated", "registry_change", "lifecycle"]
    entries, _ = call(runner, lambda s: s.tlog_entries(before, before + 3, 3, None))
    policy, registry, dead = (logleaf.parse(leaf) for _, leaf in entries)
    assert policy.policy_activated.signed_activation_digest == hashlib.sha256(b"signed").digest()
    assert (registry.registry_change.change, registry.registry_change.actor) == ("added", "broker")
    assert (dead.lifecycle.kind, dead.lifecycle.recipient) == ("dead_lettered", "DE-BKA")
    assert logleaf.index_of(dead).reader == "DE-BKA"
    call(runner, lambda s: s.upsert_agency(agency("FR-NCB", "suspended")))
    assert call(runner, lambda s: s.tlog_sync(NOW)) == 1
    assert kinds(runner)[-1] == "registry_change"


def test_hybrid_checkpoints_and_a_classical_head_given_its_ml_dsa_line(
    runner: StoreRunner,
) -> None:
    def hybrid(note: str) -> int:
        opened = open_log_checkpoint(note, SIGNER.verifier, pq_verifier=PQ_SIGNER.verifier)
        return opened.checkpoint.size

    call(runner, lambda s: s.tlog_append([lifecycle(i) for i in range(3)]))
    classical = call(runner, lambda s: s.tlog_issue_checkpoint(SIGNER, NOW))
    with pytest.raises(CheckpointError, match="no ML-DSA-65 signature"):
        hybrid(classical.note)
    # The broker got its PQ log key: the head it already signed is served with both lines.
    upgraded = call(runner, lambda s: s.tlog_issue_checkpoint(SIGNER, NOW + 1, PQ_SIGNER))
    assert upgraded.size == 3 and upgraded.note.startswith(classical.note)
    assert hybrid(upgraded.note) == 3
    assert call(runner, lambda s: s.tlog_checkpoint()).note == upgraded.note
    again = call(runner, lambda s: s.tlog_issue_checkpoint(SIGNER, NOW + 2, PQ_SIGNER))
    assert again.note == upgraded.note  # signed once, not once per call
    call(runner, lambda s: s.tlog_append([lifecycle(9)]))
    grown = call(runner, lambda s: s.tlog_issue_checkpoint(SIGNER, NOW + 3, PQ_SIGNER))
    assert hybrid(grown.note) == 4


def test_checkpoints_only_when_the_log_grew(runner: StoreRunner) -> None:
    first = call(runner, lambda s: s.tlog_issue_checkpoint(SIGNER, NOW))
    assert first.size == 0 and first.root == merkle.empty_root()
    call(runner, lambda s: s.tlog_append([lifecycle(i) for i in range(5)]))
    second = call(runner, lambda s: s.tlog_issue_checkpoint(SIGNER, NOW + 1))
    again = call(runner, lambda s: s.tlog_issue_checkpoint(SIGNER, NOW + 2))
    assert second.size == 5 and again == second
    cp, _ = open_checkpoint(second.note, [SIGNER.verifier])
    assert (cp.origin, cp.size, cp.root) == (SIGNER.name, 5, second.root)
    assert call(runner, lambda s: s.tlog_checkpoint(size=0)).size == 5
    assert call(runner, lambda s: s.tlog_checkpoint(size=3)) is None
    assert call(runner, lambda s: s.tlog_checkpoint(min_cosignatures=1)) is None
    count = call(runner, lambda s: s.tlog_add_cosignature(5, "w", "— w old", 10, NOW))
    assert count == 1
    call(runner, lambda s: s.tlog_add_cosignature(5, "w", "— w new", 11, NOW))
    call(runner, lambda s: s.tlog_add_cosignature(5, "w", "— w stale", 9, NOW))
    cosigned = call(runner, lambda s: s.tlog_checkpoint(min_cosignatures=1))
    assert cosigned.cosignatures == ("— w new",)
    assert cosigned.full_note.endswith("\n— w new\n")
