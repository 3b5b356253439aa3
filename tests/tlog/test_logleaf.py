"""broker.core.logleaf: typed leaves, deterministic bytes, whom each leaf is about."""

from __future__ import annotations

import hashlib
import json

import pytest

from broker.core import logleaf
from broker.v1 import audit_pb2, notice_pb2

NOTICE = "0b4f9c1e-6a43-4d8e-9a51-6a0c1f2b3c4d"
RECORD = json.dumps(
    {
        "policy_version": "ab" * 32,
        "notice": {"originator": "FR-NCB", "sections": ["biometrics", "identity", "photos"]},
        "recipients": [],
        "decisions": [
            {"recipient": "DE-BKA", "section": "biometrics", "allowed": True, "rules": ["p"]},
            {"recipient": "DE-BKA", "section": "identity", "allowed": True, "rules": ["p"]},
            {"recipient": "DE-BKA", "section": "photos", "allowed": True, "rules": ["p"]},
            {"recipient": "IT-BORDER", "section": "biometrics", "allowed": False, "rules": ["f"]},
            {"recipient": "IT-BORDER", "section": "identity", "allowed": True, "rules": ["p"]},
            {"recipient": "IT-BORDER", "section": "photos", "allowed": True, "rules": ["p"]},
        ],
    },
    sort_keys=True,
)


def publication() -> list[audit_pb2.LogLeaf]:
    return logleaf.publication(
        notice_id=NOTICE,
        version=1,
        originator="FR-NCB",
        kind="interpol.red",
        header_digest=b"h" * 32,
        envelope_digest=b"e" * 32,
        created_at_ms=1,
        expires_at_ms=2,
        accepted_at_ms=3,
        policy_version="ab" * 32,
        decision_record=RECORD,
        planned=[("IT-BORDER", ("identity",)), ("DE-BKA", ("biometrics", "identity", "photos"))],
        logged_at_ms=4,
    )


def test_publication_leaves_and_withholdings() -> None:
    notice, decision, *withheld = publication()
    assert logleaf.kind_of(notice) == logleaf.NOTICE
    assert notice.notice.header_digest == b"h" * 32
    assert decision.decision.decisions_digest == hashlib.sha256(RECORD.encode()).digest()
    assert [(p.recipient, list(p.sections)) for p in decision.decision.planned] == [
        ("DE-BKA", ["biometrics", "identity", "photos"]),
        ("IT-BORDER", ["identity"]),
    ]
    got = [(w.withheld.recipient, list(w.withheld.sections), w.withheld.reason) for w in withheld]
    assert got == [
        ("IT-BORDER", ["biometrics"], logleaf.DENIED_BY_POLICY),
        ("IT-BORDER", ["photos"], logleaf.NOT_SEALED),
    ]
    assert list(withheld[0].withheld.rules) == ["f"]


def test_bytes_are_deterministic_and_round_trip() -> None:
    first = [logleaf.serialize(leaf) for leaf in publication()]
    assert first == [logleaf.serialize(leaf) for leaf in publication()]
    for data in first:
        assert logleaf.serialize(logleaf.parse(data)) == data


def test_who_may_see_what() -> None:
    notice, decision, withheld, _ = publication()
    receipt = notice_pb2.Receipt(
        notice_id=NOTICE, version=1, recipient="DE-BKA", header_digest=b"h" * 32
    )
    proven = notice_pb2.ProvenReceipt(receipt=receipt.SerializeToString(), signer="DE-BKA")
    dead = logleaf.lifecycle(
        kind="dead_lettered",
        notice_id=NOTICE,
        version=1,
        originator="FR-NCB",
        recipient="DE-BKA",
        detail="x",
        logged_at_ms=1,
    )
    policy = logleaf.policy_activated(
        version="v",
        activated_by="urn:broker:admin:a",
        activated_at_ms=1,
        reason="r",
        sequence=1,
        signed_activation=b"sig",
        logged_at_ms=1,
    )
    assert logleaf.index_of(notice) == logleaf.LeafIndex("notice", NOTICE, 1, "FR-NCB", "")
    assert logleaf.index_of(decision).reader == ""
    assert logleaf.index_of(withheld).reader == ""  # never shown to the recipient
    receipt_leaf = logleaf.delivery_receipt(proven, "FR-NCB", 5)
    assert logleaf.index_of(receipt_leaf).reader == "DE-BKA"
    assert receipt_leaf.receipt.receipt_digest == hashlib.sha256(proven.receipt).digest()
    assert logleaf.index_of(dead).reader == "DE-BKA"
    assert logleaf.index_of(policy) == logleaf.LeafIndex("policy_activated")
    for leaf in (notice, decision, withheld, receipt_leaf, dead, policy):
        assert logleaf.describe(leaf)
        assert logleaf.to_json(leaf)["format"] == 1


def test_registry_change_holds_no_key_material() -> None:
    statement = notice_pb2.SignedKeyStatement(
        statement=notice_pb2.KeyStatement(agency_id="FR-NCB", serial=3).SerializeToString()
    ).SerializeToString()
    leaf = logleaf.registry_change(
        agency_id="FR-NCB",
        change="added",
        country="FR",
        roles=["police", "ncb"],
        groups=[],
        purposes=["locate_arrest"],
        status="active",
        statement=statement,
        actor="bootstrap",
        logged_at_ms=1,
    )
    assert leaf.registry_change.statement_serial == 3
    assert list(leaf.registry_change.roles) == ["ncb", "police"]
    assert leaf.registry_change.statement_digest == hashlib.sha256(statement).digest()


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff",
        audit_pb2.LogLeaf(format=1).SerializeToString(),
        audit_pb2.LogLeaf(format=2, notice=audit_pb2.NoticePublished()).SerializeToString(),
    ],
)
def test_parse_refuses_what_is_not_a_leaf(data: bytes) -> None:
    with pytest.raises(logleaf.LeafError):
        logleaf.parse(data)
