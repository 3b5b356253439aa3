"""Sealed envelopes: known answers, round trips, and every tamper failing.

The known-answer constants below were computed once from this implementation
with the fixed keys and SHAKE-256 rng of this file; they pin the wire format.
The primitives are also checked against their published vectors.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.public
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import envelope_suite as es
from broker.core import hybrid as hy
from broker.core.envelope import (
    HEADER_CONTEXT,
    OPEN_FAILED,
    SUITE,
    SUITE_HYBRID,
    EnvelopeError,
    OpenedNotice,
    OpenError,
    RecipientInput,
    SectionInput,
    SignatureError,
    check_envelope,
    delivery_for,
    header_digest,
    open_delivery,
    peek_originator,
    seal,
    sign_header,
)
from broker.core.merkle import leaf_hash, root_from_hashes
from broker.v1 import notice_pb2

Rng = Callable[[int], bytes]


def shake_rng(seed: bytes) -> Rng:
    """Deterministic rng: call k returns SHAKE-256(seed || u64be(k)) truncated to n bytes."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(n)
        counter += 1
        return out

    return rng


def x25519_keypair(label: str) -> tuple[bytes, bytes]:
    pk, sk = nacl.bindings.crypto_box_seed_keypair(hashlib.sha256(label.encode()).digest())
    return bytes(pk), bytes(sk)


def kem_keypair(label: str) -> tuple[bytes, bytes]:
    """(public, private) of a deterministic hybrid KEM key: ML-KEM seed || X25519 key."""
    private = hashlib.sha512(label.encode()).digest() + hashlib.sha256(label.encode()).digest()
    return hy.kem_public_key_bytes(private), private


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


SIGNING_SEED = hashlib.sha256(b"test originator FR-NCB").digest()
ORIGINATOR_PK = es.ed25519_public_key(SIGNING_SEED)
OTHER_PK = es.ed25519_public_key(hashlib.sha256(b"test someone else").digest())
# The hybrid key extends the classical one: same Ed25519 seed, plus an ML-DSA-65 seed.
HYBRID_SEED = SIGNING_SEED + hashlib.sha256(b"test originator FR-NCB ML-DSA").digest()
HYBRID_PK = hy.verify_key(HYBRID_SEED)
SIGNING_KEYS = {SUITE: SIGNING_SEED, SUITE_HYBRID: HYBRID_SEED}
BOTH = (SUITE, SUITE_HYBRID)

AGENCIES = ("DE-BKA", "NL-POLITIE", "EUROPOL")
KEYS = {a: x25519_keypair(f"test recipient {a}") for a in AGENCIES}
PQ_KEYS = {a: kem_keypair(f"test recipient {a} KEM") for a in AGENCIES}
PLAINTEXTS = {
    "identity": b'{"family_name":"DOE","given_names":"JOHN","born":"1980-01-01"}',
    "biometrics": b"fingerprint template \x00\x01\x02",
    "case_facts": b"Armed robbery, Lyon, 2026-03-02.",
}
ACCESS = {
    "DE-BKA": frozenset({"identity", "case_facts"}),
    "NL-POLITIE": frozenset({"identity"}),
    "EUROPOL": frozenset({"identity", "biometrics", "case_facts"}),
}


def make_header(notice_id: str = "0b9e2f4c-1d2a-4c6e-9f10-3a5b7c9d1e2f") -> notice_pb2.NoticeHeader:
    return notice_pb2.NoticeHeader(
        notice_id=notice_id,
        version=1,
        originator="FR-NCB",
        kind="interpol.red",
        purpose="locate_arrest",
        data_subject=notice_pb2.DATA_SUBJECT_SUSPECT,
        tlp=notice_pb2.TLP_AMBER,
        handling_codes=["H0"],
        evaluation=notice_pb2.Evaluation(source="B", information="2"),
        created_at_ms=1_790_000_000_000,
        expires_at_ms=1_790_000_000_000 + 30 * 86_400_000,
    )


RESTRICTIONS = notice_pb2.OriginatorRestrictions(
    allow_countries=["DE", "NL"], deny_agencies=["XX-NCB"]
)
SECTIONS = [SectionInput(name, text) for name, text in PLAINTEXTS.items()]
RECIPIENTS = [
    RecipientInput(a, KEYS[a][0], ACCESS[a], pq_encryption_key=PQ_KEYS[a][0]) for a in AGENCIES
]


def make_envelope(
    seed: bytes = b"broker.v1 kat", notice_id: str | None = None, suite: str = SUITE
) -> notice_pb2.Envelope:
    header = make_header() if notice_id is None else make_header(notice_id)
    return seal(
        header,
        RESTRICTIONS,
        SECTIONS,
        RECIPIENTS,
        SIGNING_KEYS[suite],
        shake_rng(seed),
        suite=suite,
    )


ENVELOPE = make_envelope()
ENVELOPES = {SUITE: ENVELOPE, SUITE_HYBRID: make_envelope(suite=SUITE_HYBRID)}


def deliver(envelope: notice_pb2.Envelope, agency: str) -> notice_pb2.Delivery:
    return delivery_for(envelope, agency, ACCESS[agency])


def open_as(
    delivery: notice_pb2.Delivery, agency: str, originator_key: bytes = HYBRID_PK
) -> OpenedNotice:
    """Open as `agency`, holding both its keys; HYBRID_PK serves both suites (the classical
    suite reads its Ed25519 part)."""
    return open_delivery(
        delivery,
        agency,
        KEYS[agency][1],
        originator_key,
        pq_encryption_private_key=PQ_KEYS[agency][1],
    )


def parsed_header(envelope: notice_pb2.Envelope) -> notice_pb2.NoticeHeader:
    return es.parse(notice_pb2.NoticeHeader, envelope.header.header_bytes)


def resign(
    envelope: notice_pb2.Envelope,
    edit_header: Callable[[notice_pb2.NoticeHeader], None] | None = None,
) -> notice_pb2.Envelope:
    """Return a copy whose header commits to the current leaves and is signed by the originator.

    Models a misbehaving originator (or an SDK bug): everything signed, yet inconsistent.
    """
    out = notice_pb2.Envelope()
    out.CopyFrom(envelope)
    header = parsed_header(out)
    sections = sorted(
        [(s.leaf_index, s.descriptor) for s in out.sections]
        + [(p.leaf_index, p.leaf) for p in out.section_padding]
    )
    wraps = sorted(
        [(w.leaf_index, w.leaf) for w in out.wraps]
        + [(p.leaf_index, p.leaf) for p in out.wrap_padding]
    )
    header.sections_root = root_from_hashes([leaf_hash(leaf) for _, leaf in sections])
    header.wraps_root = root_from_hashes([leaf_hash(leaf) for _, leaf in wraps])
    if edit_header is not None:
        edit_header(header)
    out.header.header_bytes = es.serialize(header)
    suite = out.header.suite
    out.header.signature = sign_header(out.header.header_bytes, SIGNING_KEYS[suite], suite)
    return out


def section_named(envelope: notice_pb2.Envelope, name: str) -> notice_pb2.SealedSection:
    for section in envelope.sections:
        if es.parse(notice_pb2.SectionDescriptor, section.descriptor).name == name:
            return section
    raise AssertionError(name)


def wrap_of(envelope: notice_pb2.Envelope, agency: str) -> notice_pb2.KeyWrap:
    for wrap in envelope.wraps:
        if es.parse(notice_pb2.WrapLeaf, wrap.leaf).recipient == agency:
            return wrap
    raise AssertionError(agency)


# --------------------------------------------------------------------------- primitives


def test_xchacha20poly1305_draft_vector() -> None:
    # draft-irtf-cfrg-xchacha-03 section A.3.1
    key = bytes(range(0x80, 0xA0))
    nonce = bytes(range(0x40, 0x58))
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
        b"the future, sunscreen would be it."
    )
    expected = bytes.fromhex(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e"
        "c0875924c1c7987947deafd8780acf49"
    )
    assert es.encrypt_section(key, nonce, plaintext, aad) == nonce + expected
    assert es.decrypt_section(key, nonce + expected, aad) == plaintext
    with pytest.raises(ValueError, match="authenticate"):
        es.decrypt_section(key, nonce + expected, aad + b"x")


def test_ed25519_rfc8032_test1() -> None:
    # RFC 8032 section 7.1, TEST 1 (empty message)
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    signature = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert es.ed25519_public_key(seed) == public
    assert es.ed25519_sign(seed, b"") == signature
    assert es.ed25519_valid(public, signature, b"")
    assert not es.ed25519_valid(public, signature, b"x")
    assert not es.ed25519_valid(public[:31], signature, b"")


# The identity point (a small-order key) and a signature (R = identity, S = 0) that
# satisfies the cofactorless equation for every message: OpenSSL's Ed25519 accepts it.
IDENTITY_KEY = b"\x01" + bytes(31)
UNIVERSAL_SIGNATURE = IDENTITY_KEY + bytes(32)


@pytest.mark.parametrize("message", [b"", b"a receipt", b"a notice header" * 40])
def test_a_small_order_key_verifies_nothing(message: bytes) -> None:
    """A key of small order would make one signature valid for every message: receipts,
    headers or notes under it would prove nothing (and their signer could deny them)."""
    assert not es.ed25519_valid(IDENTITY_KEY, UNIVERSAL_SIGNATURE, message)


def test_a_signature_with_s_not_below_the_group_order_is_refused() -> None:
    """S >= L (a malleated copy of a valid signature): refused, so a signature has one
    encoding and a receipt or header cannot be re-signed into a second valid form."""
    seed = bytes(range(32))
    public = es.ed25519_public_key(seed)
    signature = es.ed25519_sign(seed, b"m")
    order = 2**252 + 27742317777372353535851937790883648493
    s = int.from_bytes(signature[32:], "little") + order
    malleated = signature[:32] + s.to_bytes(32, "little")
    assert es.ed25519_valid(public, signature, b"m")
    assert not es.ed25519_valid(public, malleated, b"m")


def test_ed25519_signatures_are_the_same_bytes_as_openssls() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    for i in range(20):
        seed = bytes([i]) * 32
        message = bytes(range(i * 7 % 256)) * (i + 1)
        ours = es.ed25519_sign(seed, message)
        assert ours == Ed25519PrivateKey.from_private_bytes(seed).sign(message)
        assert es.ed25519_public_key(seed) == (
            Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        )
        assert es.ed25519_valid(es.ed25519_public_key(seed), ours, message)


def test_sealed_box_is_libsodium_crypto_box_seal() -> None:
    pk, sk = KEYS["DE-BKA"]
    sealed = es.seal_box(b"hello", pk, bytes(32))
    assert nacl.public.SealedBox(nacl.public.PrivateKey(sk)).decrypt(sealed) == b"hello"
    assert es.open_box(sealed, sk) == b"hello"
    assert sealed[:32] == nacl.bindings.crypto_box_seed_keypair(bytes(32))[0]
    with pytest.raises(ValueError, match="not usable"):
        es.seal_box(b"hello", bytes(32), bytes(32))  # low-order point (RFC 7748 section 6.1)


def test_uniform_rejects_biased_draws() -> None:
    draws = iter([(0xFFFFFFFF).to_bytes(4, "big"), (7).to_bytes(4, "big")])
    # bound 3: limit = 2**32 - 1, so 0xFFFFFFFF is rejected and 7 gives 7 mod 3
    assert es.uniform(lambda n: next(draws), 3) == 1


def test_section_aad_layout() -> None:
    aad = es.section_aad("n-1", 7, "FR-NCB", "identity")
    assert aad == (
        b"broker.v1 section\x00\x00\x03n-1\x00\x00\x00\x07\x00\x06FR-NCB\x00\x08identity"
    )


# --------------------------------------------------------------------------- known answers

# KAT_ENVELOPE_SHA256 changed (was 5451c25c...765f2cdf) when restrictions_digest became
# salted: the envelope now carries restrictions_salt and the signed header a different
# digest. The salt is the last rng draw, so the roots and ciphertext below did not change.
# It changed again (was c5ee10c0...8d590b41), with the wraps root (was 330a863a...ff3cd146),
# the salt (was 5f202e70...71ae8b9d) and its digest (was de09f9e0...a0cea552), when every
# wrap of a notice came to share one ephemeral key (rng step 3 draws one seed, not one per
# recipient): each wrap is still an ordinary sealed box. Sections come first: unchanged.
KAT_ENVELOPE_SHA256 = "f0f3169a5b0ea7383a25a89eddda3660351bbb68601b3cac6de1a777b3f2e71a"
KAT_RESTRICTIONS_SALT = "502a268c8825b7e1d2bddead658092c5925c800ff24d5d9f70a00f0a270b5375"
KAT_RESTRICTIONS_DIGEST = "feeeb13c7885ed5722a257ceae1fca57b07d7ede1d2e580900b51eae45cc23b4"
KAT_SECTIONS_ROOT = "38b40474517d3fbf8a59093de23bed81b0fe66b09e60f4cb6396a8af8def4366"
KAT_WRAPS_ROOT = "b8309605c25de9ae7fb7e65561d386292d9343702f616030e3889d5a25c6ed57"
KAT_FIRST_CIPHERTEXT = (  # "biometrics" (leaf 0): nonce || ciphertext || tag
    "b04f440bc8c01587a6e603c13ebb6d8f8be6388d7189d5bf"
    "e3bf702cc9877a14a023ef3b9c8ebc800cb813fd90e845a801938eacde08b340c26ec4d16e94c032"
)


def test_known_answer() -> None:
    header = parsed_header(ENVELOPE)
    assert hashlib.sha256(ENVELOPE.SerializeToString(deterministic=True)).hexdigest() == (
        KAT_ENVELOPE_SHA256
    )
    assert header.sections_root.hex() == KAT_SECTIONS_ROOT
    assert header.wraps_root.hex() == KAT_WRAPS_ROOT
    assert ENVELOPE.sections[0].ciphertext.hex() == KAT_FIRST_CIPHERTEXT
    assert ENVELOPE.restrictions_salt.hex() == KAT_RESTRICTIONS_SALT
    assert header.restrictions_digest.hex() == KAT_RESTRICTIONS_DIGEST
    assert make_envelope() == ENVELOPE  # deterministic given the rng
    assert make_envelope(seed=b"other") != ENVELOPE


def test_envelope_shape() -> None:
    header = parsed_header(ENVELOPE)
    assert ENVELOPE.header.suite == SUITE
    assert header.format == 1
    assert (header.sections_tree_size, header.wraps_tree_size) == (4, 4)
    assert len(ENVELOPE.restrictions_salt) == 32
    assert (
        header.restrictions_digest
        == hashlib.sha256(
            b"broker.v1 restrictions\x00" + ENVELOPE.restrictions_salt + ENVELOPE.restrictions
        ).digest()
    )
    assert header.restrictions_digest != hashlib.sha256(ENVELOPE.restrictions).digest()
    assert ENVELOPE.restrictions == RESTRICTIONS.SerializeToString(deterministic=True)
    assert [s.leaf_index for s in ENVELOPE.sections] == sorted(
        s.leaf_index for s in ENVELOPE.sections
    )
    assert len(ENVELOPE.section_padding) == 1
    assert len(ENVELOPE.wrap_padding) == 1
    assert all(not s.proof for s in ENVELOPE.sections)
    assert es.ed25519_valid(
        ORIGINATOR_PK, ENVELOPE.header.signature, HEADER_CONTEXT + ENVELOPE.header.header_bytes
    )
    leaf = es.parse(notice_pb2.WrapLeaf, wrap_of(ENVELOPE, "DE-BKA").leaf)
    assert list(leaf.sections) == ["case_facts", "identity"]


def test_wrap_opens_with_libsodium_sealed_box() -> None:
    for agency in AGENCIES:
        leaf = es.parse(notice_pb2.WrapLeaf, wrap_of(ENVELOPE, agency).leaf)
        private = nacl.public.PrivateKey(KEYS[agency][1])
        body = es.parse(notice_pb2.WrapBody, nacl.public.SealedBox(private).decrypt(leaf.sealed))
        assert body.recipient == agency
        assert [k.name for k in body.keys] == sorted(ACCESS[agency])


def test_rng_call_order_is_as_documented() -> None:
    calls: list[bytes] = []
    inner = shake_rng(b"order")

    def recording(n: int) -> bytes:
        calls.append(inner(n))
        return calls[-1]

    envelope = seal(make_header(), RESTRICTIONS, SECTIONS, RECIPIENTS, SIGNING_SEED, recording)
    draws = iter(calls)
    header = parsed_header(envelope)

    def replay_tree(count: int, size: int) -> tuple[list[bytes], list[int]]:
        pads = [next(draws) for _ in range(size - count)]
        positions = list(range(size))
        for i in range(size - 1, 0, -1):
            limit = 2**32 - 2**32 % (i + 1)
            while (value := int.from_bytes(next(draws), "big")) >= limit:
                pass
            j = value % (i + 1)
            positions[i], positions[j] = positions[j], positions[i]
        return pads, positions

    # 1. key then nonce per section, in input order
    for section in SECTIONS:
        key, nonce = next(draws), next(draws)
        sealed = section_named(envelope, section.name)
        assert sealed.ciphertext[:24] == nonce
        aad = es.section_aad(header.notice_id, header.version, header.originator, section.name)
        assert es.decrypt_section(key, sealed.ciphertext, aad) == section.plaintext
    # 2. section padding then shuffle
    pads, positions = replay_tree(len(SECTIONS), header.sections_tree_size)
    assert [section_named(envelope, s.name).leaf_index for s in SECTIONS] == positions[:3]
    assert sorted((p.leaf_index, p.leaf) for p in envelope.section_padding) == sorted(
        zip(positions[3:], pads, strict=True)
    )
    # 3. one ephemeral seed for every wrap
    seed = next(draws)
    for recipient in RECIPIENTS:
        leaf = es.parse(notice_pb2.WrapLeaf, wrap_of(envelope, recipient.agency_id).leaf)
        assert leaf.sealed[:32] == nacl.bindings.crypto_box_seed_keypair(seed)[0]
    # 4. wrap padding then shuffle
    pads, positions = replay_tree(len(RECIPIENTS), header.wraps_tree_size)
    assert [wrap_of(envelope, a).leaf_index for a in AGENCIES] == positions[:3]
    assert [(p.leaf_index, p.leaf) for p in envelope.wrap_padding] == sorted(
        zip(positions[3:], pads, strict=True)
    )
    # 5. restrictions salt, last
    assert envelope.restrictions_salt == next(draws)
    assert next(draws, None) is None


def test_wraps_share_one_ephemeral_key_and_open_as_ordinary_sealed_boxes() -> None:
    leaves = [es.parse(notice_pb2.WrapLeaf, wrap_of(ENVELOPE, a).leaf) for a in AGENCIES]
    assert len({leaf.sealed[:32] for leaf in leaves}) == 1
    for agency, leaf in zip(AGENCIES, leaves, strict=True):
        public, private = KEYS[agency]
        body = nacl.bindings.crypto_box_seal_open(leaf.sealed, public, private)
        assert es.parse(notice_pb2.WrapBody, body).recipient == agency
        assert es.open_box(leaf.sealed, private, public) == body  # the node's cached key
        assert es.open_box(leaf.sealed, private) == body
        with pytest.raises(ValueError):
            es.open_box(leaf.sealed, private, KEYS[next(a for a in AGENCIES if a != agency)][0])
    # Two recipients with one key would share a key and nonce: refused.
    twin = RecipientInput("TWIN", KEYS[AGENCIES[0]][0], frozenset({"identity"}))
    with pytest.raises(EnvelopeError, match="same encryption key"):
        seal(
            make_header(),
            RESTRICTIONS,
            SECTIONS,
            [*RECIPIENTS, twin],
            SIGNING_SEED,
            shake_rng(b"t"),
        )


def test_restrictions_digest_depends_on_the_salt() -> None:
    # Same restrictions, different rng: different salts, so different digests; a
    # recipient cannot confirm a guess by hashing it, nor link two notices by it.
    first, second = make_envelope(seed=b"salt one"), make_envelope(seed=b"salt two")
    assert first.restrictions == second.restrictions
    assert first.restrictions_salt != second.restrictions_salt
    assert parsed_header(first).restrictions_digest != parsed_header(second).restrictions_digest
    for envelope in (first, second):
        check_envelope(envelope, ORIGINATOR_PK)
    # Empty restrictions no longer show up as SHA-256(b"").
    nobody = notice_pb2.OriginatorRestrictions()
    empty = seal(make_header(), nobody, SECTIONS, RECIPIENTS, SIGNING_SEED, shake_rng(b"e"))
    assert empty.restrictions == b""
    digest = parsed_header(empty).restrictions_digest
    assert digest != hashlib.sha256(b"").digest()
    assert digest == es.restrictions_digest(empty.restrictions_salt, b"")
    assert check_envelope(empty, ORIGINATOR_PK).restrictions == nobody


def test_restrictions_digest_rejects_bad_salt_size() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        es.restrictions_digest(bytes(31), b"")


def test_no_delivery_carries_restrictions_or_salt() -> None:
    salt = ENVELOPE.restrictions_salt
    assert len(salt) == 32
    for agency in AGENCIES:
        delivery = deliver(ENVELOPE, agency)
        raw = delivery.SerializeToString()
        assert salt not in raw
        assert ENVELOPE.restrictions not in raw
        # The only restriction-related bytes a recipient sees: the salted digest.
        assert parsed_header(ENVELOPE).restrictions_digest in raw


# --------------------------------------------------------------------------- round trips


def test_each_recipient_opens_its_sections() -> None:
    checked = check_envelope(ENVELOPE, ORIGINATOR_PK)
    assert set(checked.sections) == set(PLAINTEXTS)
    assert checked.header_digest == header_digest(ENVELOPE.header.header_bytes)
    assert checked.restrictions == RESTRICTIONS
    assert {a: ENVELOPE.wraps[i].leaf_index for a, i in checked.wrap_index.items()} == {
        a: wrap_of(ENVELOPE, a).leaf_index for a in AGENCIES
    }
    for agency in AGENCIES:
        opened = open_as(deliver(ENVELOPE, agency), agency)
        assert dict(opened.sections) == {n: PLAINTEXTS[n] for n in ACCESS[agency]}
        assert opened.header == checked.header
        assert opened.header_digest == checked.header_digest


def test_peek_originator() -> None:
    assert peek_originator(ENVELOPE.header) == "FR-NCB"
    with pytest.raises(OpenError):
        peek_originator(notice_pb2.SignedHeader(header_bytes=b"\xff\xff"))
    with pytest.raises(OpenError):
        peek_originator(notice_pb2.SignedHeader(header_bytes=b""))


@st.composite
def notices(draw: st.DrawFn) -> tuple[list[SectionInput], list[RecipientInput], bytes]:
    # Fixed-length names: no name is a substring of another, so the leak check is exact.
    names = draw(
        st.lists(
            st.text("abcdefghijklmnopqrstuvwxyz", min_size=6, max_size=6), max_size=6, unique=True
        )
    )
    sections = [SectionInput(f"s_{n}", draw(st.binary(max_size=200))) for n in names]
    agencies = draw(
        st.lists(
            st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=6, max_size=6),
            min_size=1,
            max_size=6,
            unique=True,
        )
    )
    all_names = [s.name for s in sections]
    recipients = [
        RecipientInput(
            f"AG-{a}",
            x25519_keypair(f"AG-{a}")[0],
            frozenset(draw(st.sets(st.sampled_from(all_names)))) if all_names else frozenset(),
            pq_encryption_key=kem_keypair(f"AG-{a}")[0],
        )
        for a in agencies
    ]
    return sections, recipients, draw(st.binary(min_size=8, max_size=8))


@settings(max_examples=40, deadline=None)
@given(notices())
@pytest.mark.parametrize("suite", BOTH)
def test_round_trip_and_no_leaks(
    suite: str, case: tuple[list[SectionInput], list[RecipientInput], bytes]
) -> None:
    sections, recipients, seed = case
    envelope = seal(
        make_header(),
        RESTRICTIONS,
        sections,
        recipients,
        SIGNING_KEYS[suite],
        shake_rng(seed),
        suite=suite,
    )
    checked = check_envelope(envelope, HYBRID_PK)
    assert set(checked.sections) == {s.name for s in sections}
    assert set(checked.wrap_index) == {r.agency_id for r in recipients}
    header = checked.header
    assert header.sections_tree_size == es.tree_size_for(len(sections))
    assert header.wraps_tree_size == es.tree_size_for(len(recipients))
    plain = {s.name: s.plaintext for s in sections}
    for recipient in recipients:
        delivery = delivery_for(envelope, recipient.agency_id, recipient.sections)
        opened = open_delivery(
            delivery,
            recipient.agency_id,
            x25519_keypair(recipient.agency_id)[1],
            HYBRID_PK,
            pq_encryption_private_key=kem_keypair(recipient.agency_id)[1],
        )
        assert dict(opened.sections) == {n: plain[n] for n in recipient.sections}
        raw = delivery.SerializeToString()
        for other in recipients:
            if other is not recipient:
                assert other.agency_id.encode() not in raw
        for name in plain.keys() - recipient.sections:
            assert name.encode() not in raw
        assert envelope.restrictions_salt not in raw
    raw_envelope = envelope.SerializeToString()
    for text in plain.values():
        if len(text) >= 16:
            assert text not in raw_envelope


# --------------------------------------------------------------------------- open: tampering

Mutator = Callable[[notice_pb2.Delivery], object]


def _set(field: str, value: object) -> Callable[[object], None]:
    def apply(msg: object) -> None:
        setattr(msg, field, value)

    return apply


def _edit(target: Callable[[notice_pb2.Delivery], Any], field: str, change: Any) -> Mutator:
    """Mutator replacing target(d).field by change(old value); repeated fields included."""

    def apply(delivery: notice_pb2.Delivery) -> None:
        msg = target(delivery)
        new = change(getattr(msg, field))
        if isinstance(new, list):
            msg.ClearField(field)
            getattr(msg, field).extend(new)
        else:
            setattr(msg, field, new)

    return apply


def _section(i: int) -> Callable[[notice_pb2.Delivery], notice_pb2.SealedSection]:
    return lambda d: d.sections[i]


def _header(d: notice_pb2.Delivery) -> notice_pb2.SignedHeader:
    return d.header


def _wrap(d: notice_pb2.Delivery) -> notice_pb2.KeyWrap:
    return d.wrap


def _flip_at(pos: int) -> Callable[[bytes], bytes]:
    return lambda data: flip(data, pos)


def _flip_item(j: int, pos: int) -> Callable[[Sequence[bytes]], list[bytes]]:
    return lambda items: [flip(x, pos) if k == j else x for k, x in enumerate(items)]


def _delivery_mutators(envelope: notice_pb2.Envelope) -> dict[str, Mutator]:
    suite = envelope.header.suite
    base = deliver(envelope, "DE-BKA")
    other = deliver(envelope, "NL-POLITIE")
    biometrics = section_named(envelope, "biometrics")  # EUROPOL may read it, DE-BKA may not
    extra = deliver(envelope, "EUROPOL").sections
    biometrics = next(s for s in extra if s.descriptor == biometrics.descriptor)  # with proof
    another_header = make_envelope(
        notice_id="11111111-2222-4333-8444-555555555555", suite=suite
    ).header
    m: dict[str, Mutator] = {}
    n = len(base.header.header_bytes)
    for pos in (0, 1, n // 2, n - 1):
        m[f"header_bytes[{pos}]"] = _edit(_header, "header_bytes", _flip_at(pos))
    m["header_bytes+1"] = _edit(_header, "header_bytes", lambda b: b + b"\x00")
    m["header_bytes-1"] = _edit(_header, "header_bytes", lambda b: b[:-1])
    m["signature[0]"] = _edit(_header, "signature", _flip_at(0))
    m["signature[63]"] = _edit(_header, "signature", _flip_at(63))
    m["signature empty"] = _edit(_header, "signature", lambda b: b"")
    m["signature truncated"] = _edit(_header, "signature", lambda b: b[:-1])
    m["signature last byte"] = _edit(_header, "signature", _flip_at(len(base.header.signature) - 1))
    if suite == SUITE_HYBRID:  # either half broken, or stripped, fails
        m["signature[64] (ML-DSA half)"] = _edit(_header, "signature", _flip_at(64))
        m["signature ML-DSA half stripped"] = _edit(_header, "signature", lambda b: b[:64])
        m["signature Ed25519 half stripped"] = _edit(_header, "signature", lambda b: b[64:])
        m["suite swapped to classical"] = _edit(_header, "suite", lambda s: SUITE)
        m["suite classical, Ed25519 half kept"] = lambda d: (
            _set("suite", SUITE)(d.header),
            _set("signature", d.header.signature[:64])(d.header),
        )
    else:
        m["suite swapped to hybrid"] = _edit(_header, "suite", lambda s: SUITE_HYBRID)
    m["suite"] = _edit(_header, "suite", lambda s: s.replace("v1", "v2"))
    m["suite empty"] = _edit(_header, "suite", lambda s: "")
    m["header of another notice"] = lambda d: d.header.CopyFrom(another_header)
    for i, section in enumerate(base.sections):
        at = _section(i)
        n = len(section.descriptor)
        for pos in (0, n // 2, n - 1):
            m[f"sections[{i}].descriptor[{pos}]"] = _edit(at, "descriptor", _flip_at(pos))
        n = len(section.ciphertext)
        for pos in (0, 23, 24, n - 17, n - 1):  # nonce, body, tag
            m[f"sections[{i}].ciphertext[{pos}]"] = _edit(at, "ciphertext", _flip_at(pos))
        m[f"sections[{i}].ciphertext truncated"] = _edit(at, "ciphertext", lambda b: b[:-1])
        m[f"sections[{i}].leaf_index+1"] = _edit(at, "leaf_index", lambda x: (x + 1) % 4)
        m[f"sections[{i}].leaf_index=4"] = _edit(at, "leaf_index", lambda x: 4)
        for j in range(len(section.proof)):
            m[f"sections[{i}].proof[{j}]"] = _edit(at, "proof", _flip_item(j, 0))
        m[f"sections[{i}].proof dropped"] = _edit(at, "proof", lambda p: list(p)[:-1])
        m[f"sections[{i}].proof extended"] = _edit(at, "proof", lambda p: [*p, bytes(32)])
    n = len(base.wrap.leaf)
    for pos in (0, 1, 5, n // 2, n - 1):
        m[f"wrap.leaf[{pos}]"] = _edit(_wrap, "leaf", _flip_at(pos))
    m["wrap.leaf_index+1"] = _edit(_wrap, "leaf_index", lambda x: (x + 1) % 4)
    for j in range(len(base.wrap.proof)):
        m[f"wrap.proof[{j}]"] = _edit(_wrap, "proof", _flip_item(j, 31))
    m["wrap.proof dropped"] = _edit(_wrap, "proof", lambda p: list(p)[:-1])
    m["wrap missing"] = lambda d: d.ClearField("wrap")
    m["wrap of another recipient"] = lambda d: d.wrap.CopyFrom(other.wrap)
    m["section dropped"] = lambda d: d.sections.pop()
    m["all sections dropped"] = lambda d: d.ClearField("sections")
    m["section duplicated"] = lambda d: d.sections.append(d.sections[0])
    m["another recipient's section added"] = lambda d: d.sections.append(biometrics)
    m["section swapped for another's"] = _edit(
        lambda d: d, "sections", lambda s: [*list(s)[:-1], biometrics]
    )
    return m


MUTATORS = {suite: _delivery_mutators(ENVELOPES[suite]) for suite in BOTH}
MUTATOR_CASES = [(suite, name) for suite in BOTH for name in sorted(MUTATORS[suite])]


def test_baseline_delivery_opens() -> None:
    assert set(open_as(deliver(ENVELOPE, "DE-BKA"), "DE-BKA").sections) == ACCESS["DE-BKA"]


def _assert_open_fails(call: Callable[[], object]) -> None:
    with pytest.raises(OpenError) as info:
        call()
    assert type(info.value) is OpenError
    assert str(info.value) == OPEN_FAILED
    assert info.value.__cause__ is None


@pytest.mark.parametrize(("suite", "name"), MUTATOR_CASES)
def test_tampered_delivery_fails_opaquely(suite: str, name: str) -> None:
    delivery = deliver(ENVELOPES[suite], "DE-BKA")
    original = delivery.SerializeToString()
    MUTATORS[suite][name](delivery)
    assert delivery.SerializeToString() != original
    _assert_open_fails(lambda: open_as(delivery, "DE-BKA"))


def test_wrong_parties_fail_opaquely() -> None:
    delivery = deliver(ENVELOPE, "DE-BKA")
    de_sk = KEYS["DE-BKA"][1]
    nl_sk = KEYS["NL-POLITIE"][1]
    _assert_open_fails(lambda: open_as(delivery, "DE-BKA", OTHER_PK))
    _assert_open_fails(lambda: open_delivery(delivery, "DE-BKA", de_sk, b"short"))
    _assert_open_fails(lambda: open_delivery(delivery, "NL-POLITIE", de_sk, ORIGINATOR_PK))
    _assert_open_fails(lambda: open_delivery(delivery, "DE-BKA", nl_sk, ORIGINATOR_PK))
    _assert_open_fails(lambda: open_delivery(delivery, "DE-BKA", b"short", ORIGINATOR_PK))
    swapped = deliver(ENVELOPE, "NL-POLITIE")  # NL's delivery, opened as DE with DE's key
    _assert_open_fails(lambda: open_delivery(swapped, "DE-BKA", de_sk, ORIGINATOR_PK))


@settings(max_examples=60, deadline=None)
@given(st.data())
@pytest.mark.parametrize("suite", BOTH)
def test_any_flipped_bit_fails(suite: str, data: st.DataObject) -> None:
    raw = deliver(ENVELOPES[suite], "DE-BKA").SerializeToString()
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    tampered = bytearray(raw)
    tampered[bit // 8] ^= 1 << (bit % 8)
    delivery = notice_pb2.Delivery()
    try:
        delivery.ParseFromString(bytes(tampered))
    except DecodeError:  # a delivery that does not even parse is rejected earlier
        return
    _assert_open_fails(lambda: open_as(delivery, "DE-BKA"))


# Signed by the originator but internally inconsistent: the signature alone must not suffice.


def _replace_descriptor(
    envelope: notice_pb2.Envelope, name: str, edit: Callable[[notice_pb2.SectionDescriptor], None]
) -> None:
    section = section_named(envelope, name)
    descriptor = es.parse(notice_pb2.SectionDescriptor, section.descriptor)
    edit(descriptor)
    section.descriptor = es.serialize(descriptor)


def _replace_wrap(
    envelope: notice_pb2.Envelope,
    agency: str,
    edit_body: Callable[[notice_pb2.WrapBody], None],
    edit_leaf: Callable[[notice_pb2.WrapLeaf], None] | None = None,
) -> None:
    wrap = wrap_of(envelope, agency)
    leaf = es.parse(notice_pb2.WrapLeaf, wrap.leaf)
    header = parsed_header(envelope)
    info = hy.wrap_info(header.notice_id, header.version, agency)
    hybrid = envelope.header.suite == SUITE_HYBRID
    if hybrid:
        opened = hy.hpke_open(PQ_KEYS[agency][1], leaf.sealed, info)
    else:
        opened = es.open_box(leaf.sealed, KEYS[agency][1])
    body = es.parse(notice_pb2.WrapBody, opened)
    edit_body(body)
    if hybrid:
        leaf.sealed = hy.hpke_seal(PQ_KEYS[agency][0], es.serialize(body), info)
    else:
        leaf.sealed = es.seal_box(es.serialize(body), KEYS[agency][0], bytes(32))
    if edit_leaf is not None:
        edit_leaf(leaf)
    wrap.leaf = es.serialize(leaf)


def _signed_variants(base: notice_pb2.Envelope) -> dict[str, notice_pb2.Envelope]:
    out: dict[str, notice_pb2.Envelope] = {}

    def variant(name: str, edit: Callable[[notice_pb2.Envelope], None], **kw: object) -> None:
        envelope = notice_pb2.Envelope()
        envelope.CopyFrom(base)
        edit(envelope)
        out[name] = resign(envelope, **kw)  # type: ignore[arg-type]

    variant("resigned unchanged", lambda e: None)
    variant(
        "key commitment",
        lambda e: _replace_descriptor(e, "identity", _set("key_commitment", bytes(32))),
    )
    variant("descriptor version", lambda e: _replace_descriptor(e, "identity", _set("version", 2)))
    variant(
        "descriptor notice_id",
        lambda e: _replace_descriptor(
            e, "identity", _set("notice_id", "00000000-0000-4000-8000-000000000000")
        ),
    )
    variant("wrap body notice_id", lambda e: _replace_wrap(e, "DE-BKA", _set("notice_id", "x")))
    variant("wrap body version", lambda e: _replace_wrap(e, "DE-BKA", _set("version", 9)))
    variant(
        "wrap body recipient", lambda e: _replace_wrap(e, "DE-BKA", _set("recipient", "EUROPOL"))
    )
    variant(
        "wrap body key",
        lambda e: _replace_wrap(e, "DE-BKA", lambda b: _set("key", bytes(32))(b.keys[0])),
    )
    variant(
        "wrap body extra key",
        lambda e: _replace_wrap(
            e, "DE-BKA", lambda b: b.keys.append(notice_pb2.SectionKey(name="zzz", key=bytes(32)))
        ),
    )
    variant(
        "wrap leaf sections differ from body",
        lambda e: _replace_wrap(
            e, "DE-BKA", lambda b: None, lambda leaf: leaf.sections.remove("case_facts")
        ),
    )
    variant("header format", lambda e: None, edit_header=_set("format", 2))
    variant("header version", lambda e: None, edit_header=_set("version", 2))
    variant("header tree size", lambda e: None, edit_header=_set("wraps_tree_size", 8))
    variant("header originator", lambda e: None, edit_header=_set("originator", "DE-BKA"))
    return out


SIGNED_VARIANTS_BY_SUITE = {suite: _signed_variants(ENVELOPES[suite]) for suite in BOTH}
SIGNED_VARIANTS = SIGNED_VARIANTS_BY_SUITE[SUITE]


@pytest.mark.parametrize("suite", BOTH)
@pytest.mark.parametrize("name", sorted(SIGNED_VARIANTS))
def test_signed_but_inconsistent_fails_opaquely(suite: str, name: str) -> None:
    envelope = SIGNED_VARIANTS_BY_SUITE[suite][name]
    delivery = deliver(envelope, "DE-BKA")
    if name == "resigned unchanged":  # the helper itself is sound
        assert set(open_as(delivery, "DE-BKA").sections) == ACCESS["DE-BKA"]
        return
    _assert_open_fails(lambda: open_as(delivery, "DE-BKA"))


# --------------------------------------------------------------------------- check_envelope


def _copy(envelope: notice_pb2.Envelope = ENVELOPE) -> notice_pb2.Envelope:
    out = notice_pb2.Envelope()
    out.CopyFrom(envelope)
    return out


def _free_padding(envelope: notice_pb2.Envelope) -> notice_pb2.PaddingLeaf:
    return envelope.section_padding[0]


EnvelopeEdit = Callable[[notice_pb2.Envelope], object]


def _swap_indices(
    a: notice_pb2.SealedSection | notice_pb2.KeyWrap | notice_pb2.PaddingLeaf,
    b: notice_pb2.SealedSection | notice_pb2.KeyWrap | notice_pb2.PaddingLeaf,
) -> None:
    a.leaf_index, b.leaf_index = b.leaf_index, a.leaf_index


def _pad_out_wraps(envelope: notice_pb2.Envelope) -> None:
    """Replace every wrap by a padding leaf: a tree of padding only."""
    for wrap in envelope.wraps:
        envelope.wrap_padding.add(leaf=bytes(32), leaf_index=wrap.leaf_index)
    envelope.ClearField("wraps")


CHECK_CASES: dict[str, tuple[EnvelopeEdit, type[Exception], str]] = {
    "header_bytes flipped": (
        lambda e: _set("header_bytes", flip(e.header.header_bytes, 3))(e.header),
        SignatureError,
        "header.signature does not verify",
    ),
    "signature flipped": (
        lambda e: _set("signature", flip(e.header.signature, 0))(e.header),
        SignatureError,
        "header.signature",
    ),
    "suite": (lambda e: _set("suite", "rsa")(e.header), EnvelopeError, "header.suite 'rsa'"),
    "restrictions": (
        lambda e: _set("restrictions", e.restrictions + b"\x18\x00")(e),
        EnvelopeError,
        "restrictions and restrictions_salt do not match header.restrictions_digest",
    ),
    "restrictions salt flipped": (
        lambda e: _set("restrictions_salt", flip(e.restrictions_salt, 0))(e),
        EnvelopeError,
        "restrictions and restrictions_salt do not match header.restrictions_digest",
    ),
    "restrictions salt of another envelope": (
        lambda e: _set("restrictions_salt", make_envelope(seed=b"other").restrictions_salt)(e),
        EnvelopeError,
        "restrictions and restrictions_salt do not match header.restrictions_digest",
    ),
    "restrictions salt missing": (
        lambda e: e.ClearField("restrictions_salt"),
        EnvelopeError,
        "restrictions_salt must be 32 bytes",
    ),
    "restrictions salt short": (
        lambda e: _set("restrictions_salt", e.restrictions_salt[:31])(e),
        EnvelopeError,
        "restrictions_salt must be 32 bytes",
    ),
    "restrictions salt long": (
        lambda e: _set("restrictions_salt", e.restrictions_salt + b"\x00")(e),
        EnvelopeError,
        "restrictions_salt must be 32 bytes",
    ),
    "descriptor flipped": (
        lambda e: _set("descriptor", flip(e.sections[0].descriptor, 8))(e.sections[0]),
        EnvelopeError,
        r"sections\[0\]|sections_root",
    ),
    "ciphertext flipped": (
        lambda e: _set("ciphertext", flip(e.sections[1].ciphertext, 30))(e.sections[1]),
        EnvelopeError,
        r"sections\[1\].descriptor.ciphertext_digest does not match",
    ),
    "ciphertext longer": (
        lambda e: _set("ciphertext", e.sections[1].ciphertext + b"\x00")(e.sections[1]),
        EnvelopeError,
        r"sections\[1\].descriptor.ciphertext_size does not match",
    ),
    "ciphertext too short": (
        lambda e: _set("ciphertext", b"\x00" * 10)(e.sections[0]),
        EnvelopeError,
        r"sections\[0\].ciphertext is shorter",
    ),
    "section leaf_index swapped with padding": (
        lambda e: _swap_indices(e.sections[0], e.section_padding[0]),
        EnvelopeError,
        "section leaves do not hash to header.sections_root",
    ),
    "section leaf_index reused": (
        lambda e: _set("leaf_index", e.sections[1].leaf_index)(e.sections[0]),
        EnvelopeError,
        r"is used by another leaf",
    ),
    "section leaf_index outside": (
        lambda e: _set("leaf_index", 4)(e.sections[0]),
        EnvelopeError,
        r"sections\[0\].leaf_index 4 is outside the tree of size 4",
    ),
    "section padding dropped": (
        lambda e: e.section_padding.pop(),
        EnvelopeError,
        "sections tree has 3 leaves",
    ),
    "section padding short": (
        lambda e: _set("leaf", bytes(31))(e.section_padding[0]),
        EnvelopeError,
        r"section_padding\[0\].leaf must be 32 bytes",
    ),
    "section proof present": (
        lambda e: e.sections[0].proof.append(bytes(32)),
        EnvelopeError,
        r"sections\[0\].proof must be empty",
    ),
    "section dropped": (
        lambda e: e.sections.pop(),
        EnvelopeError,
        r"leaf.sections names sections the notice lacks",
    ),
    "wrap leaf flipped": (
        lambda e: _set("leaf", flip(e.wraps[0].leaf, 30))(e.wraps[0]),  # inside .sealed
        EnvelopeError,
        "wrap leaves do not hash to header.wraps_root",
    ),
    "wrap leaf garbage": (
        lambda e: _set("leaf", b"\xff\xff\xff")(e.wraps[0]),
        EnvelopeError,
        r"wraps\[0\].leaf is not a valid WrapLeaf",
    ),
    "wrap dropped": (lambda e: e.wraps.pop(), EnvelopeError, "wraps tree has 3 leaves"),
    "wrap padding long": (
        lambda e: _set("leaf", bytes(33))(e.wrap_padding[0]),
        EnvelopeError,
        r"wrap_padding\[0\].leaf must be 32 bytes",
    ),
    "wrap proof present": (
        lambda e: e.wraps[1].proof.append(bytes(32)),
        EnvelopeError,
        r"wraps\[1\].proof must be empty",
    ),
    "wrap leaf_index swapped": (
        lambda e: _swap_indices(e.wraps[0], e.wraps[1]),
        EnvelopeError,
        "wrap leaves do not hash to header.wraps_root",
    ),
}


@pytest.mark.parametrize("suite", BOTH)
@pytest.mark.parametrize("name", sorted(CHECK_CASES))
def test_check_envelope_rejects(suite: str, name: str) -> None:
    edit, error, message = CHECK_CASES[name]
    envelope = _copy(ENVELOPES[suite])
    edit(envelope)
    with pytest.raises(error, match=message):
        check_envelope(envelope, HYBRID_PK)


def test_check_envelope_wrong_key() -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        check_envelope(ENVELOPE, OTHER_PK)
    with pytest.raises(EnvelopeError, match="32-byte Ed25519 public key"):
        check_envelope(ENVELOPE, b"short")


def _wrap_leaf_edit(
    edit: Callable[[notice_pb2.WrapLeaf], None],
) -> Callable[[notice_pb2.Envelope], None]:
    def apply(envelope: notice_pb2.Envelope) -> None:
        wrap = wrap_of(envelope, "DE-BKA")
        leaf = es.parse(notice_pb2.WrapLeaf, wrap.leaf)
        edit(leaf)
        wrap.leaf = es.serialize(leaf)

    return apply


SIGNED_CHECK_CASES: dict[str, tuple[EnvelopeEdit, dict[str, object], str]] = {
    "format": (
        lambda e: None,
        {"edit_header": _set("format", 2)},
        "header.format is 2, expected 1",
    ),
    "notice_id": (
        lambda e: None,
        {"edit_header": _set("notice_id", "")},
        "header.notice_id is empty",
    ),
    "originator": (
        lambda e: None,
        {"edit_header": _set("originator", "")},
        "header.originator is empty",
    ),
    "version": (lambda e: None, {"edit_header": _set("version", 0)}, "header.version must be >= 1"),
    "tree size 2": (
        lambda e: None,
        {"edit_header": _set("sections_tree_size", 2)},
        "header.sections_tree_size 2 is not a power of two >= 4",
    ),
    "tree size 6": (
        lambda e: None,
        {"edit_header": _set("wraps_tree_size", 6)},
        "header.wraps_tree_size 6 is not a power of two >= 4",
    ),
    "tree size 8": (
        lambda e: None,
        {"edit_header": _set("wraps_tree_size", 8)},
        "wraps tree has 4 leaves",
    ),
    "root length": (
        lambda e: None,
        {"edit_header": _set("wraps_root", b"\x00")},
        "header.wraps_root must be 32 bytes",
    ),
    "restrictions unparsable": (
        lambda e: _set("restrictions", b"\xff")(e),
        {
            "edit_header": _set(
                "restrictions_digest",
                es.restrictions_digest(ENVELOPE.restrictions_salt, b"\xff"),
            )
        },
        "restrictions is not a valid OriginatorRestrictions",
    ),
    "descriptor version": (
        lambda e: _replace_descriptor(e, "identity", _set("version", 2)),
        {},
        r"sections\[\d\].descriptor is for another notice id or version",
    ),
    "descriptor name invalid": (
        lambda e: _replace_descriptor(e, "identity", _set("name", "Identity")),
        {},
        r"sections\[\d\].descriptor.name 'Identity' must match",
    ),
    "descriptor name duplicated": (
        lambda e: _replace_descriptor(e, "identity", _set("name", "biometrics")),
        {},
        r"descriptor.name 'biometrics' is duplicated",
    ),
    "descriptor commitment length": (
        lambda e: _replace_descriptor(e, "identity", _set("key_commitment", b"x")),
        {},
        r"key_commitment must be 32 bytes",
    ),
    "wrap recipient duplicated": (
        _wrap_leaf_edit(_set("recipient", "EUROPOL")),
        {},
        r"wraps\[\d\].leaf.recipient 'EUROPOL' is duplicated",
    ),
    "wrap recipient empty": (
        _wrap_leaf_edit(_set("recipient", "")),
        {},
        r"wraps\[\d\].leaf.recipient is empty",
    ),
    "wrap sections unsorted": (
        _wrap_leaf_edit(lambda leaf: leaf.sections.reverse()),
        {},
        r"wraps\[\d\].leaf.sections must be sorted and unique",
    ),
    "wrap sections unknown": (
        _wrap_leaf_edit(lambda leaf: leaf.sections.append("zzz")),
        {},
        r"names sections the notice lacks: \['zzz'\]",
    ),
    "wrap sealed short": (
        _wrap_leaf_edit(_set("sealed", b"x")),
        {},
        r"wraps\[\d\].leaf.sealed is shorter than a (sealed box|HPKE wrap)",
    ),
    "no wraps": (
        _pad_out_wraps,
        {},
        "wraps must not be empty",
    ),
}


@pytest.mark.parametrize("suite", BOTH)
@pytest.mark.parametrize("name", sorted(SIGNED_CHECK_CASES))
def test_check_envelope_rejects_signed_inconsistency(suite: str, name: str) -> None:
    edit, kw, message = SIGNED_CHECK_CASES[name]
    envelope = _copy(ENVELOPES[suite])
    edit(envelope)
    envelope = resign(envelope, **kw)  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError, match=message) as info:
        check_envelope(envelope, HYBRID_PK)
    assert type(info.value) is EnvelopeError


def test_check_envelope_signed_garbage_header() -> None:
    envelope = _copy()
    envelope.header.header_bytes = b"\xff\xff"
    envelope.header.signature = sign_header(b"\xff\xff", SIGNING_SEED)
    with pytest.raises(EnvelopeError, match=r"header\.header_bytes is not a valid NoticeHeader"):
        check_envelope(envelope, ORIGINATOR_PK)


def test_commitment_mismatch_passes_broker_but_not_recipient() -> None:
    # The broker has no keys: it cannot see a wrong commitment; the recipient must.
    envelope = SIGNED_VARIANTS["key commitment"]
    check_envelope(envelope, ORIGINATOR_PK)
    _assert_open_fails(lambda: open_as(deliver(envelope, "DE-BKA"), "DE-BKA"))


# --------------------------------------------------------------------------- seal input


def _recipient(agency: str = "DE-BKA", **kw: object) -> RecipientInput:
    fields: dict[str, object] = {
        "agency_id": agency,
        "encryption_key": KEYS["DE-BKA"][0],
        "sections": frozenset({"identity"}),
    }
    fields.update(kw)
    return RecipientInput(**fields)  # type: ignore[arg-type]


SEAL_CASES: dict[str, tuple[dict[str, object], str]] = {
    "section name": (
        {"sections": [SectionInput("Identity", b"")]},
        r"sections\[0\].name 'Identity'",
    ),
    "section name long": ({"sections": [SectionInput("a" * 33, b"")]}, r"must match"),
    "section name newline": ({"sections": [SectionInput("identity\n", b"")]}, r"must match"),
    "section duplicated": (
        {"sections": [SectionInput("identity", b""), SectionInput("identity", b"")]},
        r"sections\[1\].name 'identity' is duplicated",
    ),
    "no recipients": ({"recipients": []}, "recipients must not be empty"),
    "recipient duplicated": (
        {"recipients": [_recipient(), _recipient()]},
        r"recipients\[1\].agency_id 'DE-BKA' is duplicated",
    ),
    "recipient empty": ({"recipients": [_recipient("")]}, r"recipients\[0\].agency_id is empty"),
    "recipient key length": (
        {"recipients": [_recipient(encryption_key=b"x")]},
        r"recipients\[0\].encryption_key must be 32 bytes",
    ),
    "recipient key low order": (
        {"recipients": [_recipient(encryption_key=bytes(32))]},
        r"recipients\[0\].encryption_key is not a usable X25519 key",
    ),
    "recipient unknown section": (
        {"recipients": [_recipient(sections=frozenset({"identity", "dna"}))]},
        r"recipients\[0\].sections names unknown sections \['dna'\]",
    ),
    "signing key": ({"signing_key": b"x"}, "signing_key must be a 32-byte Ed25519 seed"),
    "notice id": ({"header": make_header(notice_id="")}, "header.notice_id must be"),
    "version": (
        {"header": notice_pb2.NoticeHeader(notice_id="n", originator="o")},
        "header.version",
    ),
}


@pytest.mark.parametrize("name", sorted(SEAL_CASES))
def test_seal_rejects(name: str) -> None:
    kw, message = SEAL_CASES[name]
    args: dict[str, object] = {
        "header": make_header(),
        "restrictions": RESTRICTIONS,
        "sections": SECTIONS,
        "recipients": RECIPIENTS,
        "signing_key": SIGNING_SEED,
        "rng": shake_rng(b"x"),
    }
    args.update(kw)
    with pytest.raises(EnvelopeError, match=message):
        seal(**args)  # type: ignore[arg-type]


def test_seal_rejects_short_rng() -> None:
    with pytest.raises(ValueError, match="rng"):
        seal(make_header(), RESTRICTIONS, SECTIONS, RECIPIENTS, SIGNING_SEED, lambda n: b"")


def test_seal_allows_header_only_recipient_and_no_sections() -> None:
    nobody = RecipientInput("DE-BKA", KEYS["DE-BKA"][0], frozenset())
    envelope = seal(make_header(), RESTRICTIONS, [], [nobody], SIGNING_SEED, shake_rng(b"e"))
    checked = check_envelope(envelope, ORIGINATOR_PK)
    assert dict(checked.sections) == {}
    opened = open_as(delivery_for(envelope, "DE-BKA", ()), "DE-BKA")
    assert dict(opened.sections) == {}


def test_seal_overrides_commitment_fields_of_the_draft() -> None:
    draft = make_header()
    draft.format = 7
    draft.sections_root = b"junk"
    draft.wraps_tree_size = 1024
    envelope = seal(draft, RESTRICTIONS, SECTIONS, RECIPIENTS, SIGNING_SEED, shake_rng(b"kat"))
    assert envelope == seal(
        make_header(), RESTRICTIONS, SECTIONS, RECIPIENTS, SIGNING_SEED, shake_rng(b"kat")
    )
    assert draft.format == 7  # the caller's header is not modified


# --------------------------------------------------------------------------- delivery_for


def test_delivery_for_contents() -> None:
    delivery = deliver(ENVELOPE, "DE-BKA")
    assert delivery.sequence == 0 and delivery.attempt == 0
    assert delivery.header == ENVELOPE.header
    assert delivery.wrap.leaf == wrap_of(ENVELOPE, "DE-BKA").leaf
    assert len(delivery.wrap.proof) == 2
    names = [es.parse(notice_pb2.SectionDescriptor, s.descriptor).name for s in delivery.sections]
    assert sorted(names) == ["case_facts", "identity"]
    assert [s.leaf_index for s in delivery.sections] == sorted(
        s.leaf_index for s in delivery.sections
    )


def test_delivery_for_rejects() -> None:
    with pytest.raises(EnvelopeError, match="no key wrap for recipient 'XX-NCB'"):
        delivery_for(ENVELOPE, "XX-NCB", ["identity"])
    with pytest.raises(EnvelopeError, match=r"no sections named \['dna'\]"):
        delivery_for(ENVELOPE, "DE-BKA", ["identity", "dna"])
    with pytest.raises(TypeError):
        delivery_for(ENVELOPE, "DE-BKA", "identity")
    broken = _copy()
    broken.sections[0].leaf_index = broken.sections[1].leaf_index
    with pytest.raises(EnvelopeError, match="used by another leaf"):
        delivery_for(broken, "DE-BKA", ["identity"])


# --------------------------------------------------------------------------- purity

FORBIDDEN = {"grpc", "sqlite3", "asyncio", "os", "time", "random", "secrets", "socket", "datetime"}
CORE = Path(__file__).resolve().parents[2] / "broker" / "core"


@pytest.mark.parametrize(
    "module", ["envelope.py", "envelope_check.py", "envelope_suite.py", "receipts.py"]
)
def test_core_module_is_pure(module: str) -> None:
    tree = ast.parse((CORE / module).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
