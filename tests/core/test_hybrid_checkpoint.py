"""Hybrid log checkpoints (broker/core/pqnote.py, broker/core/auditing.py): the Ed25519
C2SP signed-note line stays, an ML-DSA-65 line under its own key name and key ID signs the
same text, and a verifier holding the ML-DSA key requires both (no stripping, no
downgrade); a classical C2SP verifier still opens the note by its Ed25519 line alone."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from broker.core import auditing
from broker.core import pqnote as pn
from broker.core.checkpoint import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    cosign,
    format_checkpoint,
    format_verifier_key,
    open_note,
    sign_note,
)

ORIGIN = "sealed-notice-broker/broker"
ED = Signer(ORIGIN, b"\x07" * 32)
PQ = pn.PQSigner(pn.pq_key_name(ORIGIN), b"\x09" * 32)
OTHER_PQ = pn.PQSigner(pn.pq_key_name(ORIGIN), b"\x0a" * 32)  # same name, another key
WITNESS_SEED = b"\x0b" * 32
TEXT = format_checkpoint(Checkpoint(ORIGIN, 7, b"\x01" * 32))
OTHER_TEXT = format_checkpoint(Checkpoint(ORIGIN, 8, b"\x02" * 32))


def hybrid_note(text: str = TEXT) -> str:
    return pn.add_pq_signature(sign_note(text, ED.name, ED.seed), PQ)


def lines(note: str) -> tuple[str, list[str]]:
    text, block = note.split("\n\n", 1)
    return text + "\n", block.removesuffix("\n").split("\n")


def join(text: str, sig_lines: list[str]) -> str:
    return text + "\n" + "".join(line + "\n" for line in sig_lines)


def open_hybrid(note: str) -> auditing.VerifiedCheckpoint:
    return auditing.open_log_checkpoint(note, ED.verifier, origin=ORIGIN, pq_verifier=PQ.verifier)


def flip(line: str, byte: int) -> str:
    head, _, b64 = line.rpartition(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[byte] ^= 0x01
    return f"{head} {base64.b64encode(bytes(raw)).decode()}"


def test_a_hybrid_checkpoint_round_trips() -> None:
    note = hybrid_note()
    verified = open_hybrid(note)
    assert (verified.checkpoint.size, verified.checkpoint.root) == (7, b"\x01" * 32)
    _, sig_lines = lines(note)
    assert len(sig_lines) == 2 and sig_lines[0].startswith(f"\u2014 {ORIGIN} ")
    assert sig_lines[1].startswith(f"\u2014 {ORIGIN}/ml-dsa-65 ")
    assert pn.carries_line_of(note, PQ) and not pn.carries_line_of(note, OTHER_PQ)


def test_classical_c2sp_verifiers_still_open_it_by_the_ed25519_line() -> None:
    """Witnesses and C2SP tools know only the Ed25519 key: the ML-DSA line is a signature
    from an unknown key, ignored (signed-note "Signatures")."""
    opened = open_note(hybrid_note(), [ED.verifier])
    assert [s.name for s in opened.signatures] == [ORIGIN]
    assert [s.name for s in opened.unverified] == [pn.pq_key_name(ORIGIN)]
    auditing.open_log_checkpoint(hybrid_note(), ED.verifier, origin=ORIGIN)


def test_witness_cosignatures_stay_ed25519_over_the_same_text() -> None:
    line = cosign(TEXT, auditing.witness_name("EU-HUB"), WITNESS_SEED, 1_700_000_000)
    witness = auditing.witness_verifier("EU-HUB", Signer("x", WITNESS_SEED).verifier.public_key)
    note = hybrid_note() + line + "\n"
    got = auditing.open_log_checkpoint(
        note,
        ED.verifier,
        witnesses=[witness],
        min_cosignatures=1,
        pq_verifier=PQ.verifier,
    )
    assert got.cosigners == (auditing.witness_name("EU-HUB"),)


def test_a_stripped_ml_dsa_line_fails() -> None:
    text, (ed_line, _pq_line) = lines(hybrid_note())
    with pytest.raises(auditing.CheckpointError, match="no ML-DSA-65 signature"):
        open_hybrid(join(text, [ed_line]))


def test_a_classical_only_checkpoint_fails_when_hybrid_is_expected() -> None:
    with pytest.raises(auditing.CheckpointError, match="no ML-DSA-65 signature"):
        open_hybrid(sign_note(TEXT, ED.name, ED.seed))


def test_a_stripped_ed25519_line_fails() -> None:
    text, (_ed_line, pq_line) = lines(hybrid_note())
    with pytest.raises(auditing.CheckpointError, match="no signature from a known key"):
        open_hybrid(join(text, [pq_line]))


@pytest.mark.parametrize("byte", [0, 3, 4, 100, 3312])
def test_either_half_broken_fails(byte: int) -> None:
    """Bytes 0-3 are the key ID (the line then is from an unknown key), the rest the
    signature itself."""
    text, (ed_line, pq_line) = lines(hybrid_note())
    with pytest.raises(auditing.CheckpointError):
        open_hybrid(join(text, [ed_line, flip(pq_line, byte)]))
    if byte < 4 + 64:
        with pytest.raises(auditing.CheckpointError):
            open_hybrid(join(text, [flip(ed_line, byte), pq_line]))


def test_a_broken_second_ml_dsa_line_fails_even_beside_a_good_one() -> None:
    text, (ed_line, pq_line) = lines(hybrid_note())
    with pytest.raises(auditing.CheckpointError, match="invalid ML-DSA-65 signature"):
        open_hybrid(join(text, [ed_line, pq_line, flip(pq_line, 200)]))


def test_an_ml_dsa_line_of_another_text_or_key_fails() -> None:
    text, (ed_line, _) = lines(hybrid_note())
    _, (_, spliced) = lines(hybrid_note(OTHER_TEXT))
    with pytest.raises(auditing.CheckpointError, match="invalid ML-DSA-65 signature"):
        open_hybrid(join(text, [ed_line, spliced]))
    impostor = pn.pq_signature_line(text, OTHER_PQ)  # same name, the attacker's own key
    with pytest.raises(auditing.CheckpointError, match="no ML-DSA-65 signature"):
        open_hybrid(join(text, [ed_line, impostor]))


def test_the_ml_dsa_half_verifies_with_a_direct_library_call() -> None:
    """Interoperability: the line is key ID || FIPS 204 ML-DSA-65 over the note text with
    context "sealed-notice-broker signed-note", checked here without the project."""
    text, (_, pq_line) = lines(hybrid_note())
    raw = base64.b64decode(pq_line.rpartition(" ")[2])
    public = mldsa.MLDSA65PrivateKey.from_seed_bytes(PQ.seed).public_key()
    public.verify(raw[4:], text.encode(), b"sealed-notice-broker signed-note")
    import hashlib

    name = pn.pq_key_name(ORIGIN).encode()
    kid = hashlib.sha256(
        name + b"\n" + b"\xffsealed-notice-broker/ml-dsa-65/v1" + public.public_bytes_raw()
    ).digest()[:4]
    assert raw[:4] == kid


def test_verifier_key_strings_round_trip_and_bad_ones_are_refused() -> None:
    s = pn.format_pq_verifier_key(PQ.verifier)
    assert pn.parse_pq_verifier_key(s) == PQ.verifier
    name, kid, key64 = s.split("+", 2)
    bad = {
        "ed25519 key": format_verifier_key(ORIGIN, ED.verifier.public_key),
        "key id": f"{name}+{'0' * 8 if kid != '0' * 8 else '1' * 8}+{key64}",
        "short id": f"{name}+abc+{key64}",
        "base64": f"{name}+{kid}+{key64[:-3]}!!!",
        "short key": f"{name}+{kid}+{key64[:40]}",
    }
    for case, text in bad.items():
        with pytest.raises(NoteError):
            pn.parse_pq_verifier_key(text)
        assert case


def test_bad_keys_are_refused() -> None:
    with pytest.raises(NoteError, match="seed must be 32 bytes"):
        pn.PQSigner(pn.pq_key_name(ORIGIN), b"\x01" * 31)
    with pytest.raises(NoteError, match="public key must be 1952 bytes"):
        pn.PQVerifier(ORIGIN, b"\x01" * 32)
    with pytest.raises(NoteError, match="key name"):
        pn.PQSigner("bad name", b"\x01" * 32)
    with pytest.raises(NoteError, match="blank line"):
        pn.add_pq_signature(TEXT, PQ)
    assert isinstance(Verifier(ORIGIN, ED.verifier.public_key), Verifier)
