"""The hybrid suite: round trips, no downgrade or stripping, suites never cross, interop
with direct `cryptography` HPKE and ML-DSA calls, and envelope-layer known answers over
fixed HPKE outputs (the library draws HPKE's ephemeral keys itself; see docs/post-quantum.md).

The tamper tests of the classical suite run for both suites in test_envelope.py.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem, x25519

from broker.core import envelope_suite as es
from broker.core import hybrid as hy
from broker.core import receipts as rcp
from broker.core.envelope import (
    HEADER_CONTEXT,
    SUITE,
    SUITE_HYBRID,
    EnvelopeError,
    OpenError,
    RecipientInput,
    SignatureError,
    check_envelope,
    delivery_for,
    open_delivery,
    seal,
)
from broker.v1 import notice_pb2
from tests.core.test_envelope import (
    ACCESS,
    AGENCIES,
    ENVELOPES,
    HYBRID_PK,
    HYBRID_SEED,
    KEYS,
    ORIGINATOR_PK,
    PQ_KEYS,
    RECIPIENTS,
    RESTRICTIONS,
    SECTIONS,
    SIGNING_SEED,
    deliver,
    make_envelope,
    make_header,
    open_as,
    parsed_header,
    shake_rng,
    wrap_of,
)

LIB_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
HYBRID = ENVELOPES[SUITE_HYBRID]


def lib_private_key(private: bytes) -> hpke.MLKEM768X25519PrivateKey:
    """The recipient's key built with the library directly, not through broker.core.hybrid."""
    return hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:64]),
        x25519.X25519PrivateKey.from_private_bytes(private[64:]),
    )


# --- round trips and sizes ------------------------------------------------------------


def test_hybrid_round_trip_every_recipient() -> None:
    for agency in AGENCIES:
        opened = open_as(deliver(HYBRID, agency), agency)
        assert set(opened.sections) == ACCESS[agency]
        for name, text in opened.sections.items():
            assert text == dict((s.name, s.plaintext) for s in SECTIONS)[name]
    assert HYBRID.header.suite == SUITE_HYBRID
    assert len(HYBRID.header.signature) == hy.SIGNATURE_SIZE == 64 + 3309


def test_key_sizes() -> None:
    pk, sk = PQ_KEYS["DE-BKA"]
    assert len(pk) == hy.KEM_PUBLIC_SIZE == 1216 and len(sk) == hy.KEM_PRIVATE_SIZE == 96
    assert len(HYBRID_PK) == hy.VERIFY_KEY_SIZE == 1984
    assert HYBRID_PK[:32] == ORIGINATOR_PK  # the Ed25519 half is the classical key
    assert hy.ENC_SIZE == 1120


def test_hybrid_check_envelope_accepts_and_needs_the_pq_key() -> None:
    checked = check_envelope(HYBRID, HYBRID_PK)
    assert set(checked.wrap_index) == set(AGENCIES)
    with pytest.raises(SignatureError, match="carries no ML-DSA-65 key"):
        check_envelope(HYBRID, ORIGINATOR_PK)  # an originator without a PQ key in its statement


def test_same_plaintexts_both_suites_same_layout() -> None:
    classical, hybrid = parsed_header(ENVELOPES[SUITE]), parsed_header(HYBRID)
    assert classical.sections_root == hybrid.sections_root  # one rng order for both suites
    assert classical.wraps_root != hybrid.wraps_root
    assert ENVELOPES[SUITE].restrictions_salt == HYBRID.restrictions_salt


# --- suites never cross ---------------------------------------------------------------


def test_hybrid_envelope_never_opens_or_checks_as_classical() -> None:
    delivery = deliver(HYBRID, "DE-BKA")
    delivery.header.suite = SUITE
    with pytest.raises(OpenError):
        open_as(delivery, "DE-BKA")
    delivery.header.signature = delivery.header.signature[:64]  # keep only the Ed25519 half
    with pytest.raises(OpenError):
        open_as(delivery, "DE-BKA")
    envelope = notice_pb2.Envelope()
    envelope.CopyFrom(HYBRID)
    envelope.header.suite = SUITE
    envelope.header.signature = HYBRID.header.signature[:64]
    with pytest.raises(SignatureError):
        check_envelope(envelope, HYBRID_PK)


def test_classical_envelope_never_opens_or_checks_as_hybrid() -> None:
    delivery = deliver(ENVELOPES[SUITE], "DE-BKA")
    delivery.header.suite = SUITE_HYBRID
    with pytest.raises(OpenError):
        open_as(delivery, "DE-BKA")
    envelope = notice_pb2.Envelope()
    envelope.CopyFrom(ENVELOPES[SUITE])
    envelope.header.suite = SUITE_HYBRID
    with pytest.raises(SignatureError):
        check_envelope(envelope, HYBRID_PK)


def test_hybrid_wrap_is_bound_to_its_recipient_and_notice() -> None:
    # DE's HPKE wrap copied into NL's place: the info names DE, NL's key cannot open it,
    # and even DE's key does not open it under another recipient's info.
    leaf = notice_pb2.WrapLeaf.FromString(wrap_of(HYBRID, "DE-BKA").leaf)
    header = parsed_header(HYBRID)
    right = hy.wrap_info(header.notice_id, header.version, "DE-BKA")
    assert hy.hpke_open(PQ_KEYS["DE-BKA"][1], leaf.sealed, right)
    for info in (
        hy.wrap_info(header.notice_id, header.version, "NL-POLITIE"),
        hy.wrap_info(header.notice_id, header.version + 1, "DE-BKA"),
        hy.wrap_info(header.notice_id, header.version, "DE-BKA", suite=SUITE),
    ):
        with pytest.raises(ValueError, match="does not open"):
            hy.hpke_open(PQ_KEYS["DE-BKA"][1], leaf.sealed, info)
    with pytest.raises(ValueError, match="does not open"):
        hy.hpke_open(PQ_KEYS["NL-POLITIE"][1], leaf.sealed, right)


def test_hybrid_open_needs_the_kem_key() -> None:
    delivery = deliver(HYBRID, "DE-BKA")
    x_sk = KEYS["DE-BKA"][1]
    with pytest.raises(OpenError):
        open_delivery(delivery, "DE-BKA", x_sk, HYBRID_PK)  # no PQ private key given
    with pytest.raises(OpenError):
        open_delivery(delivery, "DE-BKA", x_sk, HYBRID_PK, pq_encryption_private_key=bytes(96))
    with pytest.raises(OpenError):
        open_delivery(
            delivery, "DE-BKA", x_sk, ORIGINATOR_PK, pq_encryption_private_key=PQ_KEYS["DE-BKA"][1]
        )


# --- hybrid signatures: both halves, bound to the suite -------------------------------


MESSAGE = b"header bytes"


def test_hybrid_signature_either_half_broken_fails() -> None:
    sig = hy.hybrid_sign(HYBRID_SEED, HEADER_CONTEXT, MESSAGE)
    assert hy.hybrid_valid(HYBRID_PK, sig, HEADER_CONTEXT, MESSAGE)
    ed_broken = bytes([sig[0] ^ 1]) + sig[1:]
    pq_broken = sig[:100] + bytes([sig[100] ^ 1]) + sig[101:]
    for bad in (ed_broken, pq_broken, sig[:64], sig[64:], sig + b"\x00", b""):
        assert not hy.hybrid_valid(HYBRID_PK, bad, HEADER_CONTEXT, MESSAGE)
    # one half from another signer's key: the halves are not interchangeable
    other = HYBRID_SEED[:32] + hashlib.sha256(b"another ML-DSA key").digest()
    spliced = sig[:64] + hy.hybrid_sign(other, HEADER_CONTEXT, MESSAGE)[64:]
    assert not hy.hybrid_valid(HYBRID_PK, spliced, HEADER_CONTEXT, MESSAGE)


def test_hybrid_halves_cannot_be_reused_as_classical() -> None:
    sig = hy.hybrid_sign(HYBRID_SEED, HEADER_CONTEXT, MESSAGE)
    # The Ed25519 half signs the suite-bound message, not HEADER_CONTEXT || message.
    assert not es.ed25519_valid(ORIGINATOR_PK, sig[:64], HEADER_CONTEXT + MESSAGE)
    assert not hy.valid_as(ORIGINATOR_PK, sig[:64], HEADER_CONTEXT, MESSAGE)
    # Nor under another context (a receipt batch signature is not a header signature).
    assert not hy.hybrid_valid(HYBRID_PK, sig, rcp.RECEIPT_CONTEXT, MESSAGE)
    # Nor under another suite id.
    assert hy.hybrid_message(HEADER_CONTEXT, MESSAGE) != hy.hybrid_message(
        HEADER_CONTEXT, MESSAGE, suite=SUITE
    )


def test_valid_as_holds_a_pq_signer_to_hybrid() -> None:
    classical = es.ed25519_sign(SIGNING_SEED, HEADER_CONTEXT + MESSAGE)
    assert hy.valid_as(ORIGINATOR_PK, classical, HEADER_CONTEXT, MESSAGE)
    assert not hy.valid_as(HYBRID_PK, classical, HEADER_CONTEXT, MESSAGE)  # no downgrade
    hybrid = hy.sign_as(HYBRID_SEED, HEADER_CONTEXT, MESSAGE)
    assert hy.valid_as(HYBRID_PK, hybrid, HEADER_CONTEXT, MESSAGE)
    assert not hy.valid_as(ORIGINATOR_PK, hybrid, HEADER_CONTEXT, MESSAGE)
    with pytest.raises(ValueError, match="32 or 64 bytes"):
        hy.sign_as(b"x" * 33, HEADER_CONTEXT, MESSAGE)


def test_hybrid_receipt_batches() -> None:
    receipt = notice_pb2.Receipt(
        notice_id="0b9e2f4c-1d2a-4c6e-9f10-3a5b7c9d1e2f",
        version=1,
        recipient="DE-BKA",
        header_digest=bytes(32),
        received_at_ms=1,
    )
    batch = rcp.sign_receipts("DE-BKA", [receipt], HYBRID_SEED)
    assert len(batch.signature) == hy.SIGNATURE_SIZE
    [proven] = rcp.verify_receipt_batch(batch, HYBRID_PK)
    assert rcp.verify_proven_receipt(proven, HYBRID_PK) == receipt
    stripped = notice_pb2.ReceiptBatch()
    stripped.CopyFrom(batch)
    stripped.signature = batch.signature[:64]
    for key in (HYBRID_PK, ORIGINATOR_PK):
        with pytest.raises(rcp.ReceiptError, match="does not verify"):
            rcp.verify_receipt_batch(stripped, key)
    classical = rcp.sign_receipts("DE-BKA", [receipt], SIGNING_SEED)
    rcp.verify_receipt_batch(classical, ORIGINATOR_PK)
    with pytest.raises(rcp.ReceiptError, match="does not verify"):
        rcp.verify_receipt_batch(classical, HYBRID_PK)  # a PQ signer is held to hybrid


# --- interoperability with direct library calls ---------------------------------------


def test_project_wrap_opens_with_direct_library_hpke() -> None:
    leaf = notice_pb2.WrapLeaf.FromString(wrap_of(HYBRID, "NL-POLITIE").leaf)
    header = parsed_header(HYBRID)
    info = hy.wrap_info(header.notice_id, header.version, "NL-POLITIE")
    body = notice_pb2.WrapBody.FromString(
        LIB_SUITE.decrypt(leaf.sealed, lib_private_key(PQ_KEYS["NL-POLITIE"][1]), info=info)
    )
    assert body.recipient == "NL-POLITIE" and [k.name for k in body.keys] == ["identity"]


def test_library_wrap_opens_with_the_project() -> None:
    def library_encapsulate(public: bytes, plaintext: bytes, info: bytes) -> bytes:
        # The recipient's public key built by the library from its private key, not parsed.
        agency = next(a for a in AGENCIES if PQ_KEYS[a][0] == public)
        return LIB_SUITE.encrypt(
            plaintext, lib_private_key(PQ_KEYS[agency][1]).public_key(), info=info
        )

    envelope = seal(
        make_header(),
        RESTRICTIONS,
        SECTIONS,
        RECIPIENTS,
        HYBRID_SEED,
        shake_rng(b"interop"),
        suite=SUITE_HYBRID,
        encapsulate=library_encapsulate,
    )
    for agency in AGENCIES:
        assert set(open_as(deliver(envelope, agency), agency).sections) == ACCESS[agency]


def test_project_signature_verifies_with_direct_library_mldsa() -> None:
    sig = hy.hybrid_sign(HYBRID_SEED, HEADER_CONTEXT, MESSAGE)
    m = (  # spelled out here, not computed by broker.core.hybrid
        b"broker.v1 hybrid signature\x00"
        + len(SUITE_HYBRID).to_bytes(2, "big")
        + SUITE_HYBRID.encode()
        + len(HEADER_CONTEXT).to_bytes(2, "big")
        + HEADER_CONTEXT
        + MESSAGE
    )
    pub = mldsa.MLDSA65PrivateKey.from_seed_bytes(HYBRID_SEED[32:]).public_key()
    assert pub.public_bytes_raw() == HYBRID_PK[32:]
    pub.verify(sig[64:], m, b"broker.v1")  # raises if invalid
    assert es.ed25519_valid(HYBRID_PK[:32], sig[:64], m)


def test_library_signature_verifies_with_the_project() -> None:
    m = hy.hybrid_message(HEADER_CONTEXT, MESSAGE)
    pq = mldsa.MLDSA65PrivateKey.from_seed_bytes(HYBRID_SEED[32:]).sign(m, b"broker.v1")
    ed = es.ed25519_sign(HYBRID_SEED[:32], m)
    assert hy.hybrid_valid(HYBRID_PK, ed + pq, HEADER_CONTEXT, MESSAGE)
    assert hy.mldsa_valid(HYBRID_PK[32:], pq, m)
    assert not hy.mldsa_valid(
        HYBRID_PK[32:], mldsa.MLDSA65PrivateKey.from_seed_bytes(HYBRID_SEED[32:]).sign(m), m
    )  # without the context string it is another signature


def test_library_kem_public_key_matches_the_project_encoding() -> None:
    _pk, sk = PQ_KEYS["EUROPOL"]
    lib = lib_private_key(sk)
    sealed = LIB_SUITE.encrypt(b"m", lib.public_key(), info=b"i")
    assert hy.hpke_open(sk, sealed, b"i") == b"m"
    assert LIB_SUITE.decrypt(hy.hpke_seal(_pk, b"n", b"j"), lib, info=b"j") == b"n"


# --- envelope-layer known answers over fixed HPKE outputs -----------------------------


def _fixed_encapsulate(public: bytes, plaintext: bytes, info: bytes) -> bytes:
    """A stand-in for HPKE that is a pure function of its input: the known-answer test pins
    what the envelope layer does around the wraps (bodies, infos, layout, header), and the
    library's own HPKE is checked by the interop tests above."""
    return hashlib.shake_256(public + info + plaintext).digest(hy.MIN_WRAP_SIZE) + plaintext


# SHA-256 of the header bytes (they commit to both roots, so to every wrap), computed once.
KAT_HYBRID_HEADER_SHA256 = "7721e532424f1777de4964f707685d1cc02cca1ae2a594e48b02073d22f89374"


def test_known_answer_over_fixed_hpke_outputs() -> None:
    calls: list[tuple[bytes, bytes, bytes]] = []

    def recording(public: bytes, plaintext: bytes, info: bytes) -> bytes:
        calls.append((public, plaintext, info))
        return _fixed_encapsulate(public, plaintext, info)

    envelope = seal(
        make_header(),
        RESTRICTIONS,
        SECTIONS,
        RECIPIENTS,
        HYBRID_SEED,
        shake_rng(b"broker.v1 kat"),
        suite=SUITE_HYBRID,
        encapsulate=recording,
    )
    header = parsed_header(envelope)
    assert [c[0] for c in calls] == [PQ_KEYS[a][0] for a in AGENCIES]  # recipient input order
    assert [c[2] for c in calls] == [hy.wrap_info(header.notice_id, 1, a) for a in AGENCIES]
    for (_pub, plaintext, _info), agency in zip(calls, AGENCIES, strict=True):
        body = notice_pb2.WrapBody.FromString(plaintext)
        assert body.recipient == agency and [k.name for k in body.keys] == sorted(ACCESS[agency])
    assert hashlib.sha256(envelope.header.header_bytes).hexdigest() == KAT_HYBRID_HEADER_SHA256
    # Everything but the wraps and the (hedged) ML-DSA half equals the classical envelope.
    classical = make_envelope()
    assert envelope.sections == classical.sections
    assert envelope.restrictions_salt == classical.restrictions_salt
    assert header.sections_root == parsed_header(classical).sections_root
    assert hy.hybrid_valid(
        HYBRID_PK, envelope.header.signature, HEADER_CONTEXT, envelope.header.header_bytes
    )
    # Deterministic but for ML-DSA's hedging: a second seal has the same header bytes.
    again = seal(
        make_header(),
        RESTRICTIONS,
        SECTIONS,
        RECIPIENTS,
        HYBRID_SEED,
        shake_rng(b"broker.v1 kat"),
        suite=SUITE_HYBRID,
        encapsulate=_fixed_encapsulate,
    )
    assert again.header.header_bytes == envelope.header.header_bytes
    assert again.wraps == envelope.wraps


# --- seal refuses what cannot work ----------------------------------------------------


def test_seal_hybrid_refuses_a_recipient_without_a_pq_key() -> None:
    recipients = [*RECIPIENTS[:2], RecipientInput("EUROPOL", KEYS["EUROPOL"][0], ACCESS["EUROPOL"])]
    with pytest.raises(EnvelopeError, match="'EUROPOL' has no post-quantum encryption key"):
        seal(
            make_header(),
            RESTRICTIONS,
            SECTIONS,
            recipients,
            HYBRID_SEED,
            shake_rng(b"x"),
            suite=SUITE_HYBRID,
        )


@pytest.mark.parametrize(
    ("suite", "key", "message"),
    [
        (SUITE_HYBRID, SIGNING_SEED, "64-byte hybrid key"),
        (SUITE, HYBRID_SEED, "32-byte Ed25519 seed"),
        ("rot13/v1", SIGNING_SEED, "is not one of"),
    ],
)
def test_seal_rejects_key_of_the_wrong_suite(suite: str, key: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        seal(make_header(), RESTRICTIONS, SECTIONS, RECIPIENTS, key, shake_rng(b"x"), suite=suite)


def test_seal_hybrid_names_an_unusable_pq_key() -> None:
    recipients = [RecipientInput("DE-BKA", KEYS["DE-BKA"][0], ACCESS["DE-BKA"], bytes(1216))]
    with pytest.raises(EnvelopeError, match=r"recipients\[0\].pq_encryption_key is not a usable"):
        seal(
            make_header(),
            RESTRICTIONS,
            SECTIONS,
            recipients,
            HYBRID_SEED,
            shake_rng(b"x"),
            suite=SUITE_HYBRID,
        )


def test_suite_names() -> None:
    assert hy.suite_of("hybrid") == SUITE_HYBRID and hy.suite_of("classical") == SUITE
    assert hy.suite_of(SUITE_HYBRID) == SUITE_HYBRID
    assert hy.short_name(SUITE_HYBRID) == "hybrid"
    with pytest.raises(ValueError, match="unknown suite 'rsa'"):
        hy.suite_of("rsa")


def test_delivery_for_hybrid_has_no_other_wrap() -> None:
    delivery = delivery_for(HYBRID, "DE-BKA", ACCESS["DE-BKA"])
    raw = delivery.SerializeToString()
    for other in ("NL-POLITIE", "EUROPOL"):
        sealed = notice_pb2.WrapLeaf.FromString(wrap_of(HYBRID, other).leaf).sealed
        assert sealed not in raw


def test_lifecycle_actions_and_restriction_updates_sign_hybrid() -> None:
    from broker.core import lifecycle, relay
    from broker.errors import InvalidArgument

    action = notice_pb2.LifecycleAction(
        action_id="0b9e2f4c-1d2a-4c6e-9f10-3a5b7c9d1e2f",
        notice_id="0b9e2f4c-1d2a-4c6e-9f10-3a5b7c9d1e2f",
        actor="FR-NCB",
        kind=notice_pb2.LIFECYCLE_WITHDRAW,
    ).SerializeToString()
    signed = notice_pb2.SignedLifecycleAction(
        action=action, signature=lifecycle.sign_action(action, HYBRID_SEED)
    )
    assert len(signed.signature) == hy.SIGNATURE_SIZE
    assert lifecycle.verify_action(signed, HYBRID_PK).actor == "FR-NCB"
    for key in (ORIGINATOR_PK, HYBRID_PK):  # the Ed25519 half alone never passes
        stripped = notice_pb2.SignedLifecycleAction(action=action, signature=signed.signature[:64])
        with pytest.raises(InvalidArgument, match="does not verify"):
            lifecycle.verify_action(stripped, key)
    classical = notice_pb2.SignedLifecycleAction(
        action=action, signature=lifecycle.sign_action(action, SIGNING_SEED)
    )
    assert lifecycle.verify_action(classical, ORIGINATOR_PK).actor == "FR-NCB"
    with pytest.raises(InvalidArgument, match="does not verify"):
        lifecycle.verify_action(classical, HYBRID_PK)  # a PQ actor is held to hybrid

    update = b"\x0a\x03abc"
    signature = relay.sign_restriction_update(update, HYBRID_SEED)
    assert hy.valid_as(HYBRID_PK, signature, relay.RESTRICTION_UPDATE_CONTEXT, update)
    assert not hy.valid_as(ORIGINATOR_PK, signature[:64], relay.RESTRICTION_UPDATE_CONTEXT, update)
