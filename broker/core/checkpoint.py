"""Signed notes, transparency-log checkpoints and witness cosignatures (pure).

Implements three C2SP specifications; section names below refer to them:

* c2sp.org/signed-note (signed-note.md): the note format ("Format"), signature
  lines and key IDs ("Signatures"), and Ed25519 signatures, type 0x01
  ("Ed25519 signatures"). Key strings follow golang.org/x/mod/sumdb/note:
  verifier keys ``name+hexkeyid+base64(type || public key)`` and signer keys
  ``PRIVATE+KEY+name+hexkeyid+base64(type || seed)``.
* c2sp.org/tlog-checkpoint (tlog-checkpoint.md): the checkpoint note text
  ("Note text").
* c2sp.org/tlog-cosignature (tlog-cosignature.md): timestamped Ed25519
  cosignatures, type 0x04 ("Format", "Ed25519 signed message").

Everything here is a pure function of its arguments: times are parameters and
keys are passed in as bytes. Every failure raises :class:`NoteError`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from broker.core import envelope_suite as es
from broker.errors import InvalidArgument

__all__ = [
    "MAX_SIGNATURES",
    "SIG_TYPE_COSIGNATURE_V1",
    "SIG_TYPE_ED25519",
    "Checkpoint",
    "NoteError",
    "NoteSignature",
    "SignedNote",
    "Signer",
    "Verifier",
    "cosign",
    "cosignature_message",
    "ed25519_public_key",
    "format_checkpoint",
    "format_signer_key",
    "format_verifier_key",
    "key_id",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint",
    "parse_signer_key",
    "parse_verifier_key",
    "sign_note",
    "verify_cosignature",
]

SIG_TYPE_ED25519 = 0x01
"""signed-note "Signature types": Ed25519 over the note text."""
SIG_TYPE_COSIGNATURE_V1 = 0x04
"""signed-note "Signature types": timestamped Ed25519 witness cosignature."""

MAX_SIGNATURES = 100
"""Most signature lines accepted in one note (the spec requires at least 16)."""

KEY_ID_SIZE = 4
ED25519_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
ROOT_HASH_SIZE = 32
MAX_TREE_SIZE = 2**64 - 1
MAX_TIMESTAMP = 2**63 - 1

_SIG_PREFIX = "\u2014 "  # em dash, space
_SIGNER_PREFIX = "PRIVATE+KEY+"
_COSIGNATURE_HEADER = "cosignature/v1\n"
_VERIFIER_TYPES = frozenset({SIG_TYPE_ED25519, SIG_TYPE_COSIGNATURE_V1})
_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # used with fullmatch; ASCII digits only
_HEX_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")
_U64 = struct.Struct(">Q")


class NoteError(InvalidArgument):
    """A note, key string, checkpoint or cosignature is malformed or does not verify."""


# ------------------------------------------------------------------------- helpers


def _require_utf8(s: str, what: str) -> bytes:
    """Return s as UTF-8; raise NoteError for strings that are not (lone surrogates)."""
    if not isinstance(s, str):
        raise NoteError(f"{what} must be a string")
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError(f"{what} is not valid UTF-8") from exc


def _preview(s: str) -> str:
    """Return repr(s), shortened, for error messages about untrusted input."""
    return repr(s if len(s) <= 40 else s[:40] + "...")


def _check_no_controls(s: str, what: str, *, newline_ok: bool) -> None:
    """Reject ASCII control characters (signed-note "Format"), newline optionally allowed."""
    for ch in s:
        if ch < " " and not (newline_ok and ch == "\n"):
            raise NoteError(f"{what} contains control character {ch!r}")


def _check_name(name: str) -> None:
    """Check a key name: non-empty, no Unicode spaces, no '+' (signed-note "Format")."""
    _require_utf8(name, "key name")
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise NoteError(f"invalid key name {_preview(name)}: empty, or contains a space or '+'")
    _check_no_controls(name, "key name", newline_ok=False)


def _check_text(text: str) -> bytes:
    """Check a note text (signed-note "Format") and return it as UTF-8."""
    raw = _require_utf8(text, "note text")
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_no_controls(text, "note text", newline_ok=True)
    return raw


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(s: str, what: str) -> bytes:
    """Decode standard, padded, canonical base64 (RFC 4648 section 4); raise NoteError."""
    try:
        raw = base64.b64decode(s, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII input
        raise NoteError(f"{what} is not valid base64") from exc
    if _b64encode(raw) != s:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _check_bytes(value: bytes, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise NoteError(f"{what} must be {size} bytes")


def _check_timestamp(timestamp: int) -> None:
    """A cosignature time: POSIX seconds, 0 <= t <= 2^63 - 1 (tlog-cosignature "Format")."""
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"timestamp must be an integer in [0, 2^63 - 1], got {timestamp!r}")


# Ed25519 is envelope_suite's (libsodium), as for every other signature here: its verify
# refuses a small-order key, under which OpenSSL's accepts one signature for every note.


def _seed(seed: bytes) -> bytes:
    _check_bytes(seed, ED25519_KEY_SIZE, "Ed25519 seed")
    return seed


def ed25519_public_key(seed: bytes) -> bytes:
    """Return the 32-byte RFC 8032 Ed25519 public key for a 32-byte seed.

    Raises NoteError when the seed is not 32 bytes.
    """
    return es.ed25519_public_key(_seed(seed))


# -------------------------------------------------------------------------- keys


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """Return the 4-byte key ID SHA-256(name || 0x0A || type || public key)[:4].

    signed-note "Signatures"; for Ed25519 the type is 0x01 ("Ed25519
    signatures"), for cosignatures 0x04 (tlog-cosignature "Format").
    Raises NoteError for an invalid name or a type outside 0..255.
    """
    _check_name(name)
    if type(sig_type) is not int or not 0 <= sig_type <= 0xFF:
        raise NoteError(f"signature type must be one byte, got {sig_type!r}")
    if not isinstance(public_key, bytes):
        raise NoteError("public key must be bytes")
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key)
    return digest.digest()[:KEY_ID_SIZE]


@dataclass(frozen=True)
class Verifier:
    """A trusted Ed25519 public key under a name: a note key (0x01) or a cosigner key (0x04).

    Construction raises NoteError for an invalid name (signed-note "Format"),
    an unsupported type, or a key that is not 32 bytes.
    """

    name: str
    public_key: bytes
    sig_type: int = SIG_TYPE_ED25519
    key_id: bytes = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if self.sig_type not in _VERIFIER_TYPES:
            raise NoteError(f"unsupported signature type {self.sig_type!r}")
        _check_bytes(self.public_key, ED25519_KEY_SIZE, "Ed25519 public key")
        object.__setattr__(self, "key_id", key_id(self.name, self.sig_type, self.public_key))


@dataclass(frozen=True)
class Signer:
    """An Ed25519 signing key (type 0x01) under a name; the seed is kept out of repr.

    Construction raises NoteError for an invalid name or a seed that is not 32 bytes.
    """

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_bytes(self.seed, ED25519_KEY_SIZE, "Ed25519 seed")

    @property
    def verifier(self) -> Verifier:
        """Return the matching public :class:`Verifier`."""
        return Verifier(self.name, ed25519_public_key(self.seed))

    @property
    def key_id(self) -> bytes:
        """Return the 4-byte key ID of the public key."""
        return self.verifier.key_id


def format_verifier_key(name: str, public_key: bytes, sig_type: int = SIG_TYPE_ED25519) -> str:
    """Return the verifier key string ``name+hexkeyid+base64(type || public key)``.

    Format of golang.org/x/mod/sumdb/note NewVerifier (and c2sp vkeys); sig_type
    0x04 encodes a cosigner key (tlog-cosignature "Format"). Raises NoteError
    for an invalid name, type or key.
    """
    v = Verifier(name, public_key, sig_type)
    return f"{name}+{v.key_id.hex()}+{_b64encode(bytes([sig_type]) + public_key)}"


def _split_key_string(rest: str, what: str) -> tuple[str, bytes, int, bytes]:
    """Split ``name+hexkeyid+base64(type || key)`` into (name, key ID, type, key)."""
    name, _, rest = rest.partition("+")
    hex_id, _, key64 = rest.partition("+")  # base64 itself may contain '+'
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise NoteError(f"malformed {what}: key ID must be 8 hex digits")
    _check_name(name)
    key = _b64decode(key64, f"{what} key material")
    if len(key) < 1:
        raise NoteError(f"malformed {what}: empty key material")
    return name, bytes.fromhex(hex_id), key[0], key[1:]


def parse_verifier_key(s: str) -> Verifier:
    """Parse a verifier key string ``name+hexkeyid+base64(type || public key)``.

    Accepts types 0x01 (Ed25519) and 0x04 (Ed25519 cosigner). Returns the
    :class:`Verifier`. Raises NoteError when the string is malformed, the type
    unsupported, the key not 32 bytes or not a usable Ed25519 point (small order, not
    on the curve), or the key ID does not match (signed-note "Signatures").
    """
    _require_utf8(s, "verifier key")
    name, kid, sig_type, key = _split_key_string(s, "verifier key")
    verifier = Verifier(name, key, sig_type)
    if verifier.key_id != kid:
        raise NoteError("verifier key ID does not match the key")
    if not es.ed25519_usable_key(key):
        raise NoteError(
            "verifier key is not a usable Ed25519 key (small order or not on the curve): "
            "nothing signed under it would prove anything"
        )
    return verifier


def format_signer_key(name: str, seed: bytes) -> str:
    """Return the secret signer key string ``PRIVATE+KEY+name+hexkeyid+base64(0x01 || seed)``.

    The key ID is that of the public key (golang.org/x/mod/sumdb/note
    GenerateKey). Raises NoteError for an invalid name or seed.
    """
    signer = Signer(name, seed)
    key64 = _b64encode(bytes([SIG_TYPE_ED25519]) + seed)
    return f"{_SIGNER_PREFIX}{name}+{signer.key_id.hex()}+{key64}"


def parse_signer_key(s: str) -> Signer:
    """Parse a signer key string ``PRIVATE+KEY+name+hexkeyid+base64(0x01 || seed)``.

    Returns the :class:`Signer`. Raises NoteError when the string is malformed,
    the type is not Ed25519 (0x01), the seed is not 32 bytes, or the key ID
    does not match the derived public key. Messages never include the seed.
    """
    _require_utf8(s, "signer key")
    if not s.startswith(_SIGNER_PREFIX):
        raise NoteError("malformed signer key: missing PRIVATE+KEY+ prefix")
    name, kid, sig_type, seed = _split_key_string(s[len(_SIGNER_PREFIX) :], "signer key")
    if sig_type != SIG_TYPE_ED25519:
        raise NoteError(f"unsupported signer key type {sig_type}")
    signer = Signer(name, seed)
    if signer.key_id != kid:
        raise NoteError("signer key ID does not match the key")
    return signer


# ------------------------------------------------------------------------- notes


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID and the signature bytes after the ID.

    ``timestamp`` is the cosignature time for verified type 0x04 signatures,
    otherwise None.
    """

    name: str
    key_id: bytes
    payload: bytes
    timestamp: int | None = None

    @property
    def line(self) -> str:
        """Return the signature line without its newline: ``— name base64(key ID || payload)``."""
        return f"{_SIG_PREFIX}{self.name} {_b64encode(self.key_id + self.payload)}"


@dataclass(frozen=True)
class SignedNote:
    """An opened note: its text and the signatures found in it.

    ``signatures`` holds the verified signatures from known keys (at least one,
    one per key); ``unverified`` those from unknown keys, which were ignored.
    """

    text: str
    signatures: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...] = ()


def _signature_line(name: str, kid: bytes, payload: bytes) -> str:
    return NoteSignature(name, kid, payload).line


def _parse_signature_line(line: str) -> NoteSignature:
    """Parse ``— name base64(key ID || signature)`` (signed-note "Signatures")."""
    if not line.startswith(_SIG_PREFIX):
        raise NoteError("signature line must start with an em dash and a space")
    name, _, sig64 = line[len(_SIG_PREFIX) :].partition(" ")
    _check_name(name)
    if not sig64:
        raise NoteError("signature line has no signature")
    raw = _b64decode(sig64, "signature")
    if len(raw) <= KEY_ID_SIZE:
        raise NoteError("signature is too short")
    return NoteSignature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


def _verify_payload(verifier: Verifier, text: bytes, payload: bytes) -> None:
    """Verify an Ed25519 note signature (type 0x01) over the note text.

    Raises NoteError when it does not verify.
    """
    if not es.ed25519_valid(verifier.public_key, payload, text):
        raise NoteError(f"invalid signature from {verifier.name}")


def _verify_cosignature_payload(verifier: Verifier, text: bytes, payload: bytes) -> int:
    """Verify ``u64be(timestamp) || Ed25519 signature`` (type 0x04) over the note text.

    Returns the timestamp. Raises NoteError when the payload is malformed, the
    timestamp exceeds 2^63 - 1, or the signature does not verify.
    """
    if len(payload) != _U64.size + ED25519_SIGNATURE_SIZE:
        raise NoteError(f"cosignature from {verifier.name} has the wrong length")
    (timestamp,) = _U64.unpack_from(payload)
    if timestamp > MAX_TIMESTAMP:
        raise NoteError(f"cosignature from {verifier.name} has a timestamp above 2^63 - 1")
    message = _cosignature_header(timestamp) + text
    if not es.ed25519_valid(verifier.public_key, payload[_U64.size :], message):
        raise NoteError(f"invalid cosignature from {verifier.name}")
    return int(timestamp)


def sign_note(text: str, name: str, signing_seed: bytes) -> str:
    """Sign text with an Ed25519 key (signed-note "Format", "Ed25519 signatures").

    Returns ``text + "\\n" + "— name base64(key ID || signature)\\n"``. Raises
    NoteError when text does not end in a newline or holds control characters,
    or when the name or seed is invalid.
    """
    signer = Signer(name, signing_seed)
    raw = _check_text(text)
    signature = es.ed25519_sign(_seed(signing_seed), raw)
    return f"{text}\n{_signature_line(name, signer.key_id, signature)}\n"


def open_note(note: str, verifiers: Sequence[Verifier]) -> SignedNote:
    """Parse a signed note and verify its signatures from known keys (signed-note).

    A signature is from a known key when both its name and key ID match a
    verifier; others are ignored and returned as ``unverified``. Every
    signature from a known key must verify; a repeat from the same key is
    verified but reported once.

    Returns the :class:`SignedNote`. Raises NoteError when the note is malformed
    (not UTF-8, control characters, no blank line before the signatures, a bad
    signature line, more than MAX_SIGNATURES lines), when the verifier list
    has two different keys with the same name and key ID, when a signature
    from a known key fails, or when no signature from a known key is present.
    """
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        if known.setdefault((v.name, v.key_id), v) != v:
            raise NoteError(f"ambiguous verifiers for {v.name}+{v.key_id.hex()}")
    _require_utf8(note, "note")
    _check_no_controls(note, "note", newline_ok=True)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("note must end with a signature line and a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    raw_text = text.encode("utf-8")
    verified: dict[tuple[str, bytes], NoteSignature] = {}
    unverified: dict[NoteSignature, None] = {}
    for line in lines:
        sig = _parse_signature_line(line)
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            unverified.setdefault(sig)
            continue
        timestamp = None
        if verifier.sig_type == SIG_TYPE_COSIGNATURE_V1:
            timestamp = _verify_cosignature_payload(verifier, raw_text, sig.payload)
        else:
            _verify_payload(verifier, raw_text, sig.payload)
        verified.setdefault(
            (sig.name, sig.key_id), NoteSignature(sig.name, sig.key_id, sig.payload, timestamp)
        )
    if not verified:
        raise NoteError("note has no signature from a known key")
    return SignedNote(text, tuple(verified.values()), tuple(unverified))


# ------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A log checkpoint body (tlog-checkpoint "Note text").

    Construction raises NoteError unless origin is non-empty, size is an
    integer in [0, 2^64 - 1], root is 32 bytes, extensions is a tuple of
    non-empty lines, and no field holds a control character or newline.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require_utf8(self.origin, "origin")
        if not self.origin:
            raise NoteError("checkpoint origin must be non-empty")
        _check_no_controls(self.origin, "origin", newline_ok=False)
        if type(self.size) is not int or not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"tree size must be an integer in [0, 2^64 - 1], got {self.size!r}")
        _check_bytes(self.root, ROOT_HASH_SIZE, "root hash")
        if not isinstance(self.extensions, tuple):
            raise NoteError("extensions must be a tuple of lines")
        for ext in self.extensions:
            _require_utf8(ext, "extension line")
            if not ext:
                raise NoteError("extension lines must be non-empty")
            _check_no_controls(ext, "extension line", newline_ok=False)


def format_checkpoint(cp: Checkpoint) -> str:
    """Return the checkpoint note text ``origin\\nsize\\nbase64(root)\\n`` plus extension lines.

    tlog-checkpoint "Note text"; every line, the last included, ends in a newline.
    """
    lines = [cp.origin, str(cp.size), _b64encode(cp.root), *cp.extensions]
    return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint note text strictly (tlog-checkpoint "Note text").

    Requires at least three newline-terminated lines: a non-empty origin, a
    decimal size without leading zeros (at most 2^64 - 1), a canonical base64
    32-byte root hash, then optional non-empty extension lines. Returns the
    :class:`Checkpoint`; ``format_checkpoint`` gives back the same text.
    Raises NoteError for anything else.
    """
    _check_text(text)
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("checkpoint needs origin, size and root hash lines")
    origin, size_line, root_line, *extensions = lines
    if len(size_line) > 20 or not _DECIMAL.fullmatch(size_line):
        raise NoteError(f"tree size {_preview(size_line)} is not a decimal without leading zeros")
    root = _b64decode(root_line, "root hash")
    return Checkpoint(origin, int(size_line), root, tuple(extensions))


def open_checkpoint(note: str, verifiers: Sequence[Verifier]) -> tuple[Checkpoint, SignedNote]:
    """Open a signed checkpoint: :func:`open_note`, then :func:`parse_checkpoint` of its text.

    Returns (checkpoint, opened note). Raises NoteError as those do.
    """
    opened = open_note(note, verifiers)
    return parse_checkpoint(opened.text), opened


# ----------------------------------------------------------------- cosignatures


def _cosignature_header(timestamp: int) -> bytes:
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n".encode("ascii")


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """Return the Ed25519 cosigned message (tlog-cosignature "Ed25519 signed message").

    ``cosignature/v1\\ntime <timestamp>\\n`` followed by the checkpoint text.
    Raises NoteError for an invalid checkpoint text or timestamp.
    """
    _check_timestamp(timestamp)
    parse_checkpoint(checkpoint_text)
    return _cosignature_header(timestamp) + checkpoint_text.encode("utf-8")


def cosign(checkpoint_text: str, name: str, seed: bytes, timestamp: int) -> str:
    """Cosign a checkpoint as witness ``name`` at ``timestamp`` (POSIX seconds).

    tlog-cosignature "Format": key ID with type 0x04, payload
    ``key ID || u64be(timestamp) || Ed25519 signature``. Returns the signature
    line without a newline, ``— name base64(payload)``, ready to append to the
    signed checkpoint. The caller must first have checked the checkpoint's
    consistency. Raises NoteError for an invalid checkpoint text, name, seed
    or timestamp.
    """
    message = cosignature_message(checkpoint_text, timestamp)
    verifier = Verifier(name, ed25519_public_key(seed), SIG_TYPE_COSIGNATURE_V1)
    signature = es.ed25519_sign(_seed(seed), message)
    return _signature_line(name, verifier.key_id, _U64.pack(timestamp) + signature)


def verify_cosignature(checkpoint_text: str, signature_line: str, verifier: Verifier) -> int:
    """Verify one cosignature line over a checkpoint text (tlog-cosignature).

    ``signature_line`` is ``— name base64(...)``, with or without its newline;
    ``verifier`` must be a type 0x04 cosigner key with the line's name and key
    ID. Returns the cosignature timestamp; whether it lies in the future is
    for the caller to judge. Raises NoteError when the checkpoint text or the
    line is malformed, the line is from another key, or the signature fails.
    """
    if verifier.sig_type != SIG_TYPE_COSIGNATURE_V1:
        raise NoteError("verifier is not a cosigner (type 0x04) key")
    parse_checkpoint(checkpoint_text)
    line = signature_line.removesuffix("\n")
    _require_utf8(line, "signature line")
    _check_no_controls(line, "signature line", newline_ok=False)
    sig = _parse_signature_line(line)
    if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
        raise NoteError("cosignature is not from the given cosigner key")
    return _verify_cosignature_payload(verifier, checkpoint_text.encode("utf-8"), sig.payload)
