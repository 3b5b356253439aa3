"""Signed notes, checkpoints and cosignatures (C2SP signed-note, tlog-checkpoint,
tlog-cosignature).

The sumdb vector (golang.org/x/mod sumdb/note TestSign) is read from the folder
named by BROKER_VECTORS_DIR; without it that test skips. Cosignatures are
cross-checked against a separate Ed25519 implementation (PyNaCl / libsodium).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import checkpoint as cpmod
from broker.core.checkpoint import (
    MAX_SIGNATURES,
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    cosign,
    cosignature_message,
    ed25519_public_key,
    format_checkpoint,
    format_signer_key,
    format_verifier_key,
    key_id,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
    verify_cosignature,
)
from broker.errors import InvalidArgument

EM_DASH = "\u2014"
LOG_NAME = "example.com/log"
LOG_SEED = hashlib.sha256(b"test log key").digest()
WITNESS_NAME = "witness.example/w1"
WITNESS_SEED = hashlib.sha256(b"test witness key").digest()
OTHER_SEED = hashlib.sha256(b"someone else").digest()

# The example checkpoint of tlog-checkpoint.md.
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


def log_verifier() -> Verifier:
    return Verifier(LOG_NAME, ed25519_public_key(LOG_SEED))


def witness_verifier() -> Verifier:
    return Verifier(WITNESS_NAME, ed25519_public_key(WITNESS_SEED), SIG_TYPE_COSIGNATURE_V1)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sig_line(name: str, raw: bytes) -> str:
    return f"{EM_DASH} {name} {b64(raw)}"


def line_bytes(line: str) -> bytes:
    return base64.b64decode(line.rsplit(" ", 1)[1])


def flip_line_bit(line: str, bit: int) -> str:
    raw = bytearray(line_bytes(line))
    raw[bit // 8] ^= 1 << (bit % 8)
    return f"{line.rsplit(' ', 1)[0]} {b64(bytes(raw))}"


def nacl_sign(seed: bytes, message: bytes) -> bytes:
    return bytes(nacl.signing.SigningKey(seed).sign(message).signature)


# ------------------------------------------------------------------- sumdb vector


@pytest.fixture(scope="module")
def sumdb(vectors_dir: Path) -> dict[str, str]:
    path = vectors_dir / "note" / "sumdb-note-ed25519.json"
    assert path.is_file(), f"missing vector {path}"
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_sumdb_vector_keys(sumdb: dict[str, str]) -> None:
    signer = parse_signer_key(sumdb["signer_key"])
    verifier = parse_verifier_key(sumdb["verifier_key"])
    assert signer.name == verifier.name == "PeterNeumann"
    assert signer.key_id == verifier.key_id == bytes.fromhex("c74f20a3")
    assert signer.verifier == verifier
    assert key_id(verifier.name, SIG_TYPE_ED25519, verifier.public_key) == verifier.key_id
    assert format_signer_key(signer.name, signer.seed) == sumdb["signer_key"]
    assert format_verifier_key(verifier.name, verifier.public_key) == sumdb["verifier_key"]
    assert signer.seed.hex() not in repr(signer)


def test_sumdb_vector_signature_byte_for_byte(sumdb: dict[str, str]) -> None:
    signer = parse_signer_key(sumdb["signer_key"])
    note = sign_note(sumdb["text"], signer.name, signer.seed)
    expected = sumdb["text"] + "\n" + sumdb["signature_line"] + "\n"
    assert note.encode("utf-8") == expected.encode("utf-8")

    opened = open_note(note, [parse_verifier_key(sumdb["verifier_key"])])
    assert opened.text == sumdb["text"]
    assert [s.line for s in opened.signatures] == [sumdb["signature_line"]]
    assert opened.signatures[0].timestamp is None
    assert opened.unverified == ()


def test_sumdb_vector_tampering(sumdb: dict[str, str]) -> None:
    verifier = parse_verifier_key(sumdb["verifier_key"])
    text, line = sumdb["text"], sumdb["signature_line"]
    good = f"{text}\n{line}\n"
    open_note(good, [verifier])

    with pytest.raises(NoteError, match="invalid signature"):
        open_note(f"{text.replace('answer', 'Answer')}\n{line}\n", [verifier])
    for bit in (40, 300, 8 * len(line_bytes(line)) - 1):  # inside the Ed25519 signature
        with pytest.raises(NoteError, match="invalid signature"):
            open_note(f"{text}\n{flip_line_bit(line, bit)}\n", [verifier])
    # A different key ID under the same name is another (unknown) key.
    with pytest.raises(NoteError, match="no signature from a known key"):
        open_note(f"{text}\n{flip_line_bit(line, 0)}\n", [verifier])
    # Same key ID under another name: unknown too.
    renamed = line.replace("PeterNeumann", "PeterNeumann2")
    with pytest.raises(NoteError, match="no signature from a known key"):
        open_note(f"{text}\n{renamed}\n", [verifier])


# ----------------------------------------------------------------- key strings


def test_key_id_definition() -> None:
    pub = ed25519_public_key(LOG_SEED)
    want = hashlib.sha256(LOG_NAME.encode() + b"\n\x01" + pub).digest()[:4]
    assert key_id(LOG_NAME, SIG_TYPE_ED25519, pub) == want == log_verifier().key_id
    assert key_id(LOG_NAME, SIG_TYPE_COSIGNATURE_V1, pub) != want


def test_verifier_and_signer_key_round_trip() -> None:
    for sig_type in (SIG_TYPE_ED25519, SIG_TYPE_COSIGNATURE_V1):
        v = Verifier(WITNESS_NAME, ed25519_public_key(WITNESS_SEED), sig_type)
        s = format_verifier_key(v.name, v.public_key, sig_type)
        assert s.startswith(f"{WITNESS_NAME}+{v.key_id.hex()}+")
        assert parse_verifier_key(s) == v
    signer = Signer(LOG_NAME, LOG_SEED)
    assert parse_signer_key(format_signer_key(LOG_NAME, LOG_SEED)) == signer


def test_verifier_key_with_uppercase_hex_is_accepted() -> None:
    """golang.org/x/mod/sumdb/note parses the key ID with strconv.ParseUint(_, 16, 32)."""
    name, hex_id, key64 = format_verifier_key(LOG_NAME, ed25519_public_key(LOG_SEED)).split("+", 2)
    assert parse_verifier_key(f"{name}+{hex_id.upper()}+{key64}") == log_verifier()


def _bad_verifier_keys() -> dict[str, str]:
    pub = ed25519_public_key(LOG_SEED)
    good = format_verifier_key(LOG_NAME, pub)
    name, hex_id, key64 = good.split("+", 2)
    wrong_id = f"{int(hex_id, 16) ^ 1:08x}"
    short_key = b64(bytes([1]) + pub[:31])
    ecdsa_key = b64(bytes([2]) + pub)
    return {
        "empty": "",
        "no-key": f"{name}+{hex_id}",
        "no-id": f"{name}++{key64}",
        "short-id": f"{name}+{hex_id[:7]}+{key64}",
        "wrong-id": f"{name}+{wrong_id}+{key64}",
        "signed-id": f"{name}+-{hex_id[1:]}+{key64}",
        "empty-name": f"+{hex_id}+{key64}",
        "space-in-name": f"a b+{hex_id}+{key64}",
        "bad-base64": f"{name}+{hex_id}+{key64[:-1]}!",
        "extra-padding": f"{name}+{hex_id}+{key64}==",
        "newline-in-base64": f"{name}+{hex_id}+{key64[:8]}\n{key64[8:]}",
        "short-key": f"{name}+{hex_id}+{short_key}",
        "empty-key": f"{name}+{hex_id}+",
        "ecdsa-type": f"{name}+{key_id(name, 2, pub).hex()}+{ecdsa_key}",
        "signer-key": format_signer_key(LOG_NAME, LOG_SEED),
    }


@pytest.mark.parametrize("case", sorted(_bad_verifier_keys()))
def test_parse_verifier_key_rejects(case: str) -> None:
    with pytest.raises(NoteError):
        parse_verifier_key(_bad_verifier_keys()[case])


def _bad_signer_keys() -> dict[str, str]:
    good = format_signer_key(LOG_NAME, LOG_SEED)
    rest = good.removeprefix("PRIVATE+KEY+")
    name, hex_id, key64 = rest.split("+", 2)
    cosigner_id = key_id(name, 4, ed25519_public_key(LOG_SEED)).hex()
    short_seed = b64(bytes([1]) + LOG_SEED[:31])
    cosigner_seed = b64(bytes([4]) + LOG_SEED)
    return {
        "no-prefix": rest,
        "lowercase-prefix": "private+key+" + rest,
        "verifier-key": format_verifier_key(LOG_NAME, ed25519_public_key(LOG_SEED)),
        "wrong-id": f"PRIVATE+KEY+{name}+{int(hex_id, 16) ^ 1:08x}+{key64}",
        "other-name": f"PRIVATE+KEY+{name}x+{hex_id}+{key64}",
        "short-seed": f"PRIVATE+KEY+{name}+{hex_id}+{short_seed}",
        "cosigner-type": f"PRIVATE+KEY+{name}+{cosigner_id}+{cosigner_seed}",
    }


@pytest.mark.parametrize("case", sorted(_bad_signer_keys()))
def test_parse_signer_key_rejects(case: str) -> None:
    with pytest.raises(NoteError):
        parse_signer_key(_bad_signer_keys()[case])


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\tb", "a\u00a0b", "a\u3000b", "a\x00b"])
def test_invalid_key_names_are_rejected(name: str) -> None:
    with pytest.raises(NoteError):
        Signer(name, LOG_SEED)
    with pytest.raises(NoteError):
        Verifier(name, ed25519_public_key(LOG_SEED))


def test_invalid_key_material_is_rejected() -> None:
    with pytest.raises(NoteError):
        Signer(LOG_NAME, LOG_SEED[:31])
    with pytest.raises(NoteError):
        Verifier(LOG_NAME, b"\x00" * 33)
    with pytest.raises(NoteError):
        Verifier(LOG_NAME, ed25519_public_key(LOG_SEED), 2)
    with pytest.raises(NoteError):
        key_id(LOG_NAME, 256, b"")


def test_note_error_is_invalid_argument() -> None:
    assert issubclass(NoteError, InvalidArgument)


# ------------------------------------------------------------------------- notes


note_text = st.text(
    alphabet=st.characters(codec="utf-8", min_codepoint=0x20) | st.just("\n"), max_size=80
).map(lambda s: s + "\n")


@PROPERTY_SETTINGS
@given(note_text)
def test_sign_then_open_returns_the_text(text: str) -> None:
    note = sign_note(text, LOG_NAME, LOG_SEED)
    opened = open_note(note, [log_verifier()])
    assert opened.text == text
    assert [(s.name, s.key_id) for s in opened.signatures] == [(LOG_NAME, log_verifier().key_id)]


def test_sign_note_rejects_bad_text() -> None:
    for text in ("no final newline", "a\rb\n", "tab\there\n", "\ud800\n", ""):
        with pytest.raises(NoteError):
            sign_note(text, LOG_NAME, LOG_SEED)


def test_unknown_signers_are_ignored() -> None:
    text = "hello\n"
    ours = sign_note(text, LOG_NAME, LOG_SEED)
    theirs = sign_note(text, "other.example/key", OTHER_SEED).split("\n\n")[1]
    # Same name as a known key but another key: also unknown, also ignored.
    impostor = sign_note(text, LOG_NAME, OTHER_SEED).split("\n\n")[1]
    for note in (ours + theirs + impostor, text + "\n" + theirs + impostor + ours.split("\n\n")[1]):
        opened = open_note(note, [log_verifier()])
        assert [s.name for s in opened.signatures] == [LOG_NAME]
        assert [s.line + "\n" for s in opened.unverified] == [theirs, impostor]
    with pytest.raises(NoteError, match="no signature from a known key"):
        open_note(text + "\n" + theirs + impostor, [log_verifier()])
    with pytest.raises(NoteError, match="no signature from a known key"):
        open_note(ours, [])


def test_every_known_signature_must_verify() -> None:
    text = "hello\n"
    note = sign_note(text, LOG_NAME, LOG_SEED)
    line = note.split("\n\n")[1].rstrip("\n")
    # A second, broken signature from the same known key rejects the note.
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(f"{note}{flip_line_bit(line, 100)}\n", [log_verifier()])
    # An identical repeat is verified and reported once.
    opened = open_note(f"{note}{line}\n", [log_verifier()])
    assert len(opened.signatures) == 1


def test_ambiguous_verifier_list_is_rejected() -> None:
    a = log_verifier()
    b = Verifier(LOG_NAME, ed25519_public_key(OTHER_SEED))
    object.__setattr__(b, "key_id", a.key_id)  # simulate a key ID collision
    with pytest.raises(NoteError, match="ambiguous"):
        open_note(sign_note("x\n", LOG_NAME, LOG_SEED), [a, b])
    open_note(sign_note("x\n", LOG_NAME, LOG_SEED), [a, a])  # duplicates are harmless


def test_signature_limit() -> None:
    text = "hello\n"
    ours = sign_note(text, LOG_NAME, LOG_SEED).split("\n\n")[1]
    other = [
        sig_line(f"other{i}", b"\x00\x00\x00\x00" + bytes(64)) + "\n" for i in range(MAX_SIGNATURES)
    ]
    open_note(text + "\n" + "".join(other[: MAX_SIGNATURES - 1]) + ours, [log_verifier()])
    with pytest.raises(NoteError, match="more than"):
        open_note(text + "\n" + "".join(other) + ours, [log_verifier()])


def _malformed_notes() -> dict[str, str]:
    good = sign_note("hello\nworld\n", LOG_NAME, LOG_SEED)
    text, block = good.split("\n\n")
    line = block.rstrip("\n")
    sig64 = line.rsplit(" ", 1)[1]
    return {
        "no-blank-line": good.replace("\n\n", "\n"),
        "no-signatures": text + "\n\n",
        "no-final-newline": good.rstrip("\n"),
        "blank-line-after-signature": good + "\n",
        "hyphen-not-em-dash": good.replace(EM_DASH, "-"),
        "no-space-after-dash": good.replace(f"{EM_DASH} ", EM_DASH),
        "no-signature": f"{text}\n\n{EM_DASH} {LOG_NAME}\n",
        "empty-signature": f"{text}\n\n{EM_DASH} {LOG_NAME} \n",
        "two-spaces": f"{text}\n\n{EM_DASH} {LOG_NAME}  {sig64}\n",
        "trailing-space": f"{text}\n\n{line} \n",
        "plus-in-name": good.replace(LOG_NAME, LOG_NAME + "+x"),
        "bad-base64": good.replace(sig64, sig64[:-2] + "!="),
        "unpadded-base64": good.replace(sig64, sig64.rstrip("=")),
        "non-canonical-base64": good.replace(sig64, sig64[:-2] + "N="),
        "key-id-only": f"{text}\n\n{sig_line(LOG_NAME, b'1234')}\n",
        "carriage-return": good.replace("hello", "hel\rlo"),
        "nul-in-text": good.replace("hello", "hel\x00lo"),
        "lone-surrogate": good.replace("hello", "hel\ud800lo"),
        "garbage-line": good + "not a signature\n",
    }


@pytest.mark.parametrize("case", sorted(_malformed_notes()))
def test_malformed_notes_are_rejected(case: str) -> None:
    with pytest.raises(NoteError):
        open_note(_malformed_notes()[case], [log_verifier()])


def test_note_text_is_split_at_the_last_blank_line() -> None:
    text = "a\n\nb\n\n"
    opened = open_note(sign_note(text, LOG_NAME, LOG_SEED), [log_verifier()])
    assert opened.text == text


# ------------------------------------------------------------------- checkpoints

line_chars = st.characters(codec="utf-8", min_codepoint=0x20)
checkpoints = st.builds(
    Checkpoint,
    origin=st.text(line_chars, min_size=1, max_size=40),
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(st.text(line_chars, min_size=1, max_size=20), max_size=3).map(tuple),
)


@PROPERTY_SETTINGS
@given(checkpoints)
def test_checkpoint_round_trip(cp: Checkpoint) -> None:
    text = format_checkpoint(cp)
    assert parse_checkpoint(text) == cp
    assert format_checkpoint(parse_checkpoint(text)) == text
    assert text.count("\n") == 3 + len(cp.extensions) and text.endswith("\n")


@PROPERTY_SETTINGS
@given(checkpoints)
def test_signed_checkpoint_round_trip(cp: Checkpoint) -> None:
    note = sign_note(format_checkpoint(cp), LOG_NAME, LOG_SEED)
    got, opened = open_checkpoint(note, [log_verifier()])
    assert got == cp
    assert opened.signatures[0].name == LOG_NAME


def test_spec_example_checkpoint() -> None:
    cp = parse_checkpoint(SPEC_CHECKPOINT)
    assert cp == Checkpoint(
        "example.com/behind-the-sofa",
        20852163,
        base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="),
    )
    assert format_checkpoint(cp) == SPEC_CHECKPOINT
    assert format_checkpoint(Checkpoint("o", 0, bytes(32), ("ext a", "b"))) == (
        f"o\n0\n{b64(bytes(32))}\next a\nb\n"
    )


ROOT_BYTES = bytes([0xFB, 0xFF, 0xBF] * 10 + [0xFB, 0xFE])
ROOT64 = b64(ROOT_BYTES)  # contains '+' and '/', ends in one '='
# Same bytes under lenient decoding, but nonzero padding bits.
ROOT64_NON_CANONICAL = ROOT64[:-2] + chr(ord(ROOT64[-2]) + 1) + "="


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(f"o\n1\n{ROOT64}", id="no-final-newline"),
        pytest.param("o\n1\n", id="two-lines"),
        pytest.param(f"\n1\n{ROOT64}\n", id="empty-origin"),
        pytest.param(f"o\n01\n{ROOT64}\n", id="leading-zero"),
        pytest.param(f"o\n00\n{ROOT64}\n", id="double-zero"),
        pytest.param(f"o\n+1\n{ROOT64}\n", id="plus-sign"),
        pytest.param(f"o\n-1\n{ROOT64}\n", id="negative"),
        pytest.param(f"o\n 1\n{ROOT64}\n", id="leading-space"),
        pytest.param(f"o\n1 \n{ROOT64}\n", id="trailing-space"),
        pytest.param(f"o\n1_0\n{ROOT64}\n", id="underscore"),
        pytest.param(f"o\n\u0661\n{ROOT64}\n", id="arabic-digit"),
        pytest.param(f"o\n\uff11\n{ROOT64}\n", id="fullwidth-digit"),
        pytest.param(f"o\n0x1\n{ROOT64}\n", id="hex"),
        pytest.param(f"o\n\n{ROOT64}\n", id="empty-size"),
        pytest.param(f"o\n{2**64}\n{ROOT64}\n", id="size-over-u64"),
        pytest.param(f"o\n{'9' * 5000}\n{ROOT64}\n", id="huge-size"),
        pytest.param(f"o\n1\n{b64(bytes(31))}\n", id="root-31-bytes"),
        pytest.param(f"o\n1\n{b64(bytes(33))}\n", id="root-33-bytes"),
        pytest.param(f"o\n1\n{ROOT64.rstrip('=')}\n", id="root-unpadded"),
        pytest.param(f"o\n1\n{ROOT64_NON_CANONICAL}\n", id="root-non-canonical"),
        pytest.param(f"o\n1\n{ROOT64.replace('+', '-').replace('/', '_')}\n", id="root-urlsafe"),
        pytest.param(f"o\n1\n{ROOT64}\n\n", id="empty-extension"),
        pytest.param(f"o\n1\n{ROOT64}\na\n\nb\n", id="empty-middle-extension"),
        pytest.param(f"o\r\n1\n{ROOT64}\n", id="crlf"),
        pytest.param(f"o\n1\n{ROOT64}\ne\tx\n", id="tab-in-extension"),
    ],
)
def test_parse_checkpoint_rejects(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(text)


def test_root_fixture_is_what_the_rejections_assume() -> None:
    assert parse_checkpoint(f"o\n1\n{ROOT64}\n").root == ROOT_BYTES
    assert "+" in ROOT64 and "/" in ROOT64
    assert base64.b64decode(ROOT64_NON_CANONICAL) == ROOT_BYTES


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"origin": ""}, id="empty-origin"),
        pytest.param({"origin": "a\nb"}, id="newline-in-origin"),
        pytest.param({"size": -1}, id="negative-size"),
        pytest.param({"size": 2**64}, id="size-over-u64"),
        pytest.param({"size": True}, id="bool-size"),
        pytest.param({"root": bytes(31)}, id="short-root"),
        pytest.param({"extensions": ("",)}, id="empty-extension"),
        pytest.param({"extensions": ("a\nb",)}, id="newline-in-extension"),
        pytest.param({"extensions": ["a"]}, id="extension-list"),
    ],
)
def test_checkpoint_constructor_rejects(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"origin": "o", "size": 1, "root": bytes(32), "extensions": ()}
    fields.update(kwargs)
    with pytest.raises(NoteError):
        Checkpoint(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ cosignatures

CP_TEXT = format_checkpoint(Checkpoint(LOG_NAME, 42, hashlib.sha256(b"root").digest()))


def test_cosignature_matches_independent_construction() -> None:
    """tlog-cosignature: key ID with type 0x04, payload ID || u64be(t) || Ed25519(message)."""
    t = 1679315147
    line = cosign(CP_TEXT, WITNESS_NAME, WITNESS_SEED, t)
    pub = bytes(nacl.signing.SigningKey(WITNESS_SEED).verify_key)
    kid = hashlib.sha256(WITNESS_NAME.encode() + b"\n\x04" + pub).digest()[:4]
    message = f"cosignature/v1\ntime {t}\n{CP_TEXT}".encode()
    assert cosignature_message(CP_TEXT, t) == message
    assert line == sig_line(
        WITNESS_NAME, kid + t.to_bytes(8, "big") + nacl_sign(WITNESS_SEED, message)
    )
    assert witness_verifier().key_id == kid


@PROPERTY_SETTINGS
@given(checkpoints, st.integers(0, 2**63 - 1))
def test_cosignature_round_trip(cp: Checkpoint, t: int) -> None:
    text = format_checkpoint(cp)
    line = cosign(text, WITNESS_NAME, WITNESS_SEED, t)
    assert verify_cosignature(text, line, witness_verifier()) == t
    assert verify_cosignature(text, line + "\n", witness_verifier()) == t


def test_cosigned_checkpoint_opens_with_log_and_witness_keys() -> None:
    t = 1_700_000_000
    note = sign_note(CP_TEXT, LOG_NAME, LOG_SEED) + cosign(CP_TEXT, WITNESS_NAME, WITNESS_SEED, t)
    note += "\n"
    cp, opened = open_checkpoint(note, [log_verifier(), witness_verifier()])
    assert cp == parse_checkpoint(CP_TEXT)
    assert [(s.name, s.timestamp) for s in opened.signatures] == [
        (LOG_NAME, None),
        (WITNESS_NAME, t),
    ]
    # A client that only knows the log key ignores the cosignature.
    _, opened = open_checkpoint(note, [log_verifier()])
    assert [s.name for s in opened.unverified] == [WITNESS_NAME]
    # The same Ed25519 key as a plain note key (type 0x01) has another key ID.
    plain = Verifier(WITNESS_NAME, ed25519_public_key(WITNESS_SEED))
    with pytest.raises(NoteError, match="no signature from a known key"):
        open_note(CP_TEXT + "\n" + cosign(CP_TEXT, WITNESS_NAME, WITNESS_SEED, t) + "\n", [plain])


def test_cosignature_tampering() -> None:
    t = 1_700_000_000
    line = cosign(CP_TEXT, WITNESS_NAME, WITNESS_SEED, t)
    v = witness_verifier()
    raw = line_bytes(line)

    other_cp = CP_TEXT.replace("\n42\n", "\n43\n")
    with pytest.raises(NoteError, match="invalid cosignature"):
        verify_cosignature(other_cp, line, v)
    with_ext = CP_TEXT + "extension\n"
    with pytest.raises(NoteError, match="invalid cosignature"):
        verify_cosignature(with_ext, line, v)
    # Another time with the same signature.
    moved = sig_line(WITNESS_NAME, raw[:4] + (t + 1).to_bytes(8, "big") + raw[12:])
    with pytest.raises(NoteError, match="invalid cosignature"):
        verify_cosignature(CP_TEXT, moved, v)
    for bit in (12 * 8, 40 * 8 + 3, 8 * len(raw) - 1):
        with pytest.raises(NoteError, match="invalid cosignature"):
            verify_cosignature(CP_TEXT, flip_line_bit(line, bit), v)
    with pytest.raises(NoteError, match="not from the given cosigner"):
        verify_cosignature(CP_TEXT, flip_line_bit(line, 0), v)  # key ID
    with pytest.raises(NoteError, match="not from the given cosigner"):
        verify_cosignature(CP_TEXT, line.replace(WITNESS_NAME, WITNESS_NAME + "x"), v)
    other = Verifier(WITNESS_NAME, ed25519_public_key(OTHER_SEED), SIG_TYPE_COSIGNATURE_V1)
    with pytest.raises(NoteError, match="not from the given cosigner"):
        verify_cosignature(CP_TEXT, line, other)
    with pytest.raises(NoteError, match="wrong length"):
        verify_cosignature(CP_TEXT, sig_line(WITNESS_NAME, raw[:-1]), v)
    with pytest.raises(NoteError, match="type 0x04"):
        verify_cosignature(CP_TEXT, line, Verifier(WITNESS_NAME, v.public_key))
    # In a note, a broken cosignature from a known witness rejects the whole note.
    note = sign_note(CP_TEXT, LOG_NAME, LOG_SEED) + moved + "\n"
    with pytest.raises(NoteError, match="invalid cosignature"):
        open_note(note, [log_verifier(), v])


def test_cosignature_timestamp_bounds() -> None:
    for bad in (-1, 2**63, True):
        with pytest.raises(NoteError, match="timestamp"):
            cosign(CP_TEXT, WITNESS_NAME, WITNESS_SEED, bad)
    # A correctly signed cosignature claiming t = 2^63 is still rejected.
    t = 2**63
    message = f"cosignature/v1\ntime {t}\n{CP_TEXT}".encode()
    kid = witness_verifier().key_id
    line = sig_line(WITNESS_NAME, kid + t.to_bytes(8, "big") + nacl_sign(WITNESS_SEED, message))
    with pytest.raises(NoteError, match="2\\^63"):
        verify_cosignature(CP_TEXT, line, witness_verifier())
    assert (
        verify_cosignature(
            CP_TEXT, cosign(CP_TEXT, WITNESS_NAME, WITNESS_SEED, 0), witness_verifier()
        )
        == 0
    )


def test_cosign_requires_a_checkpoint() -> None:
    with pytest.raises(NoteError):
        cosign("not a checkpoint\n", WITNESS_NAME, WITNESS_SEED, 1)
    with pytest.raises(NoteError):
        verify_cosignature("not a checkpoint\n", "x", witness_verifier())


# ----------------------------------------------------------------------- purity


def test_checkpoint_module_is_pure() -> None:
    forbidden = {"os", "time", "random", "grpc", "sqlite3", "asyncio", "secrets", "datetime"}
    tree = ast.parse(Path(cpmod.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint(forbidden), imported & forbidden


def test_a_note_under_a_small_order_key_is_refused() -> None:
    """A log or witness key of small order (here the identity point) would make one
    signature valid for every note (OpenSSL's Ed25519 accepts it): refused."""
    identity = b"\x01" + bytes(31)
    verifier = cpmod.Verifier("log.example/small", identity)
    text = "log.example/small\n1\n" + base64.b64encode(bytes(32)).decode() + "\n"
    forged = identity + bytes(32)  # R = identity, S = 0
    note = f"{text}\n— log.example/small {base64.b64encode(verifier.key_id + forged).decode()}\n"
    with pytest.raises(cpmod.NoteError, match="invalid signature"):
        cpmod.open_note(note, [verifier])


@pytest.mark.parametrize(
    "key",
    [
        b"\x01" + bytes(31),  # the identity point
        bytes(32),  # a point of order 4
        b"\xec" + b"\xff" * 30 + b"\x7f",  # y = p - 1: non-canonical
    ],
)
def test_a_small_order_or_non_canonical_verifier_key_is_refused_at_load(key: bytes) -> None:
    """Configured log and witness keys are refused when read (trust.toml, log.pub), not
    only when a note under them fails: the operator learns at once what to fix."""
    text = cpmod.format_verifier_key("log.example/small", key)
    with pytest.raises(cpmod.NoteError, match="not a usable Ed25519 key"):
        cpmod.parse_verifier_key(text)
    good = nacl.signing.SigningKey(bytes(range(32))).verify_key.encode()
    assert (
        cpmod.parse_verifier_key(cpmod.format_verifier_key("log.example/good", good)).public_key
        == good
    )
