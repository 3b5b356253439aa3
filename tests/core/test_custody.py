"""broker.core.custody: signed, hash-linked custody records; every break is named."""

from __future__ import annotations

import pytest

from broker.core import custody
from broker.v1 import evidence_pb2

NOTICE = "0b0f7c4e-1d2a-4c43-9e58-8a3c1d2e3f40"
SEEDS = {"FR-NCB": bytes([1]) * 32, "DE-BKA": bytes([2]) * 32}
EXPECTED = custody.Expected(NOTICE, 1, "photos", bytes([7]) * 32, bytes([9]) * 32)


def _public(seed: bytes) -> bytes:
    from nacl.signing import SigningKey

    return bytes(SigningKey(seed).verify_key)


PUBLIC = {a: _public(s) for a, s in SEEDS.items()}


def chain(actions: list[tuple[str, int]]) -> list[evidence_pb2.SignedCustody]:
    out: list[evidence_pb2.SignedCustody] = []
    previous = custody.genesis(NOTICE, 1, "photos", EXPECTED.evidence_digest)
    for seq, (agency, action) in enumerate(actions):
        record = evidence_pb2.CustodyRecord(
            notice_id=NOTICE, version=1, section="photos",
            evidence_digest=EXPECTED.evidence_digest, header_digest=EXPECTED.header_digest,
            seq=seq, previous_digest=previous, agency=agency, action=action, at_ms=1000 + seq,  # type: ignore[arg-type]
        )  # fmt: skip
        signed = custody.sign_record(record, SEEDS[agency])
        out.append(signed)
        previous = custody.record_digest(signed.record)
    return out


HONEST = [
    ("FR-NCB", evidence_pb2.CUSTODY_SEALED),
    ("DE-BKA", evidence_pb2.CUSTODY_RECEIVED),
    ("DE-BKA", evidence_pb2.CUSTODY_OPENED),
]


def verify(links: list[evidence_pb2.SignedCustody]) -> list[evidence_pb2.CustodyRecord]:
    return custody.verify_chain(links, EXPECTED, PUBLIC.get, "FR-NCB")


def test_an_honest_chain_verifies() -> None:
    records = verify(chain(HONEST))
    assert [r.seq for r in records] == [0, 1, 2]


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (lambda c: c[:1] + c[2:], "link 1 says it is link 2"),
        (lambda c: [c[0], c[2], c[1]], "link 1 says it is link 2"),
        (lambda c: c[1:], "link 0 says it is link 1"),
        (lambda c: [], "empty"),
    ],
)
def test_missing_and_reordered_links_are_named(attack: object, message: str) -> None:
    with pytest.raises(custody.CustodyError, match=message):
        verify(attack(chain(HONEST)))  # type: ignore[operator]


def test_a_relinked_chain_that_skips_a_link_fails_its_signature() -> None:
    links = chain(HONEST)
    r = evidence_pb2.CustodyRecord.FromString(links[2].record)
    r.seq, r.previous_digest = 1, custody.record_digest(links[0].record)
    links[2] = evidence_pb2.SignedCustody(
        record=r.SerializeToString(), signature=links[2].signature
    )
    with pytest.raises(custody.CustodyError, match="not signed by DE-BKA"):
        verify([links[0], links[2]])


def test_a_forged_or_unknown_signer_fails() -> None:
    links = chain(HONEST)
    links[1] = evidence_pb2.SignedCustody(record=links[1].record, signature=bytes(64))
    with pytest.raises(custody.CustodyError, match="link 1 is not signed by DE-BKA"):
        verify(links)
    with pytest.raises(custody.CustodyError, match="whose signing key is unknown"):
        custody.verify_chain(chain(HONEST), EXPECTED, lambda a: None, "FR-NCB")


def test_a_chain_not_started_by_the_originator_sealing_fails() -> None:
    with pytest.raises(custody.CustodyError, match="link 0 is not the originator"):
        verify(chain([("DE-BKA", evidence_pb2.CUSTODY_SEALED)]))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("evidence_digest", bytes(32), "another evidence digest"),
        ("header_digest", bytes(32), "another notice header"),
        ("section", "identity", "another attachment"),
    ],
)
def test_a_link_over_something_else_fails(field: str, value: object, message: str) -> None:
    links = chain(HONEST)
    r = evidence_pb2.CustodyRecord.FromString(links[1].record)
    setattr(r, field, value)
    links[1] = custody.sign_record(r, SEEDS["DE-BKA"])
    with pytest.raises(custody.CustodyError, match=message):
        verify(links)


def test_the_leaf_carries_the_record_digest() -> None:
    links = chain(HONEST)
    r = custody.parse_record(links[1])
    leaf = custody.custody_leaf(r, "FR-NCB", links[1].record, 5)
    assert leaf.custody.record_digest == custody.record_digest(links[1].record)
    assert (leaf.custody.seq, leaf.custody.action, leaf.custody.agency) == (1, "received", "DE-BKA")


def test_the_leaf_is_indexed_for_the_originator_and_the_agency_that_acted() -> None:
    from broker.core import logleaf

    links = chain(HONEST)
    leaf = custody.custody_leaf(custody.parse_record(links[2]), "FR-NCB", links[2].record, 5)
    parsed = logleaf.parse(logleaf.serialize(leaf))
    assert logleaf.kind_of(parsed) == logleaf.CUSTODY
    assert logleaf.index_of(parsed) == logleaf.LeafIndex(
        logleaf.CUSTODY, NOTICE, 1, "FR-NCB", "DE-BKA"
    )
    assert logleaf.describe(parsed) == f"custody {NOTICE} v1 photos #2: opened by DE-BKA"
