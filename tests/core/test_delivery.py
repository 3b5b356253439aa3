"""Deliveries cut at publish and assembled from bytes equal what delivery_for builds."""

from __future__ import annotations

import hashlib
import os

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import delivery as dl
from broker.core import envelope_suite as es
from broker.core.envelope import (
    EnvelopeError,
    RecipientInput,
    SectionInput,
    check_envelope,
    delivery_for,
    open_delivery,
    seal,
)
from broker.v1 import agency_pb2, notice_pb2

SEED = hashlib.sha256(b"delivery test originator").digest()
ORIGINATOR_PK = es.ed25519_public_key(SEED)
STATEMENT = notice_pb2.SignedKeyStatement(
    statement=b"statement", signature=b"sig"
).SerializeToString()


def keypair(label: str) -> tuple[bytes, bytes]:
    pk, sk = nacl.bindings.crypto_box_seed_keypair(hashlib.sha256(label.encode()).digest())
    return bytes(pk), bytes(sk)


def make(sections: dict[str, bytes], audience: dict[str, set[str]]) -> notice_pb2.Envelope:
    header = notice_pb2.NoticeHeader(
        notice_id="3f1e7c1a-0000-4000-8000-000000000001",
        version=1,
        originator="FR-NCB",
        kind="interpol.red",
        purpose="locate_arrest",
        created_at_ms=1,
        expires_at_ms=2,
    )
    recipients = [RecipientInput(a, keypair(a)[0], frozenset(s)) for a, s in audience.items()]
    return seal(
        header,
        notice_pb2.OriginatorRestrictions(),
        [SectionInput(n, d) for n, d in sections.items()],
        recipients,
        SEED,
        os.urandom,
    )


NAMES = ["identity", "photos", "case_facts", "judicial", "biometrics"]


@settings(max_examples=40)
@given(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True),
    st.integers(min_value=1, max_value=9),
    st.data(),
)
def test_assembled_equals_delivery_for(names: list[str], n: int, data: st.DataObject) -> None:
    sections = {name: os.urandom(data.draw(st.integers(0, 300))) for name in names}
    audience = {
        f"AG-{i}": set(data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True)))
        for i in range(n)
    }
    envelope = make(sections, audience)
    checked = check_envelope(envelope, ORIGINATOR_PK)
    obligation = notice_pb2.Obligation(section=names[0], kind="acknowledge", text="t", rule="r")
    shares = [(r, s, [obligation] if i % 2 else []) for i, (r, s) in enumerate(audience.items())]
    cut = dl.cut_notice(envelope, checked, STATEMENT, shares)
    assert len(cut.deliveries) == n
    # Obligations handed over already encoded (relay.Plan.wire_obligations) cut the same.
    encoded = [(r, s, dl.encode_obligations(o)) for r, s, o in shares]
    assert dl.cut_notice(envelope, checked, STATEMENT, encoded).deliveries == cut.deliveries
    stripped = notice_pb2.Envelope.FromString(cut.stripped_envelope)
    assert all(not s.ciphertext for s in stripped.sections)
    ciphertexts = dict(enumerate(cut.ciphertexts))
    blobs = []
    for i, (recipient, wanted, obligations) in enumerate(shares):
        part = cut.deliveries[i]
        assert part.recipient == recipient
        blob = dl.assemble(
            sequence=1000 + i,
            attempt=i + 1,
            head=cut.head,
            sections=part.sections,
            ciphertexts=ciphertexts,
            wrap=part.wrap,
            obligations=part.obligations,
        )
        blobs.append(blob)
        want = delivery_for(envelope, recipient, wanted)
        want.sequence = 1000 + i
        want.attempt = i + 1
        want.originator_statement.ParseFromString(STATEMENT)
        want.obligations.extend(obligations)
        got = notice_pb2.Delivery.FromString(blob)
        assert got == want
        opened = open_delivery(got, recipient, keypair(recipient)[1], ORIGINATOR_PK)
        assert dict(opened.sections) == {s: sections[s] for s in wanted}
    response = agency_pb2.SubscribeResponse.FromString(dl.subscribe_response(blobs))
    assert [d.sequence for d in response.deliveries] == [1000 + i for i in range(n)]


def test_cut_refuses_unknown_recipient_and_section() -> None:
    envelope = make({"identity": b"x"}, {"DE-BKA": {"identity"}})
    checked = check_envelope(envelope, ORIGINATOR_PK)
    with pytest.raises(EnvelopeError, match="no key wrap"):
        dl.cut_notice(envelope, checked, b"", [("IT-BORDER", {"identity"}, [])])
    with pytest.raises(EnvelopeError, match="no sections named"):
        dl.cut_notice(envelope, checked, b"", [("DE-BKA", {"photos"}, [])])


def test_damaged_framing_and_missing_ciphertext_are_refused() -> None:
    envelope = make({"identity": b"x"}, {"DE-BKA": {"identity"}})
    checked = check_envelope(envelope, ORIGINATOR_PK)
    cut = dl.cut_notice(envelope, checked, b"", [("DE-BKA", {"identity"}, [])])
    part = cut.deliveries[0]
    with pytest.raises(EnvelopeError, match="damaged"):
        dl.parse_positions(part.sections[:-1])
    with pytest.raises(EnvelopeError, match="missing"):
        dl.assemble(
            sequence=1,
            attempt=1,
            head=cut.head,
            sections=part.sections,
            ciphertexts={},
            wrap=part.wrap,
            obligations=b"",
        )


@settings(max_examples=300)
@given(st.one_of(st.integers(0, 300), st.integers(0, (1 << 64) - 1)))
def test_varints_are_protobufs_own(value: int) -> None:
    # The one-byte fast path and the loop both write what protobuf writes (field 1, a
    # uint64: one tag byte, then the varint; proto3 writes no field for 0).
    want = notice_pb2.Delivery(sequence=value).SerializeToString()[1:] if value else b"\x00"
    assert dl._varint(value) == want
    with pytest.raises(ValueError):
        dl._varint(-1 - value)
