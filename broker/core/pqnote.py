"""ML-DSA-65 signature lines in C2SP signed notes: the post-quantum half of a hybrid
transparency-log checkpoint (pure).

Where the deployment runs the hybrid suite, the broker signs each checkpoint twice over
the same note text: the Ed25519 line of c2sp.org/signed-note (type 0x01, key name = the
origin), which every C2SP tool and witness keeps verifying, and one more line from an
ML-DSA-65 key under its own key name (:func:`pq_key_name`) and key ID. A verifier that is
configured with the ML-DSA log key requires both (broker/core/auditing.py): a note with
the ML-DSA line stripped, or either line broken, fails. Witness cosignatures stay
Ed25519 (c2sp.org/tlog-cosignature, type 0x04).

signed-note assigns no type byte to ML-DSA; its "Signature types" reserve 0xff "for
signature types without an identifier byte assigned by this specification", followed by
"a longer identifier that is unlikely to collide". Here:

* type            = 0xff || "sealed-notice-broker/ml-dsa-65/v1" (:data:`PQ_TYPE`)
* key ID          = SHA-256(key name || 0x0A || type || 1952-byte public key)[:4]
* verifier key    = ``name+hexkeyid+base64(type || public key)`` (as for Ed25519 keys)
* signature line  = ``— name base64(key ID || ML-DSA-65 signature)``, the signature over
  the note text (FIPS 204 pure ML-DSA, context string :data:`MLDSA_NOTE_CONTEXT`).

Every failure raises :class:`broker.core.checkpoint.NoteError`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from broker.core.checkpoint import NoteError, NoteSignature, SignedNote, key_id
from broker.core.hybrid import MLDSA_PUBLIC_SIZE, MLDSA_SEED_SIZE, MLDSA_SIGNATURE_SIZE

PQ_TYPE = b"\xff" + b"sealed-notice-broker/ml-dsa-65/v1"
MLDSA_NOTE_CONTEXT = b"sealed-notice-broker signed-note"
PQ_NAME_SUFFIX = "/ml-dsa-65"


def pq_key_name(origin: str) -> str:
    """The key name of a log's ML-DSA-65 key: its origin with ``/ml-dsa-65`` appended."""
    return origin + PQ_NAME_SUFFIX


def _pq_key_id(name: str, public_key: bytes) -> bytes:
    return key_id(name, PQ_TYPE[0], PQ_TYPE[1:] + public_key)


@dataclass(frozen=True)
class PQVerifier:
    """A trusted ML-DSA-65 note key under a name. Raises NoteError for a bad name or key."""

    name: str
    public_key: bytes
    key_id: bytes = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, bytes) or len(self.public_key) != MLDSA_PUBLIC_SIZE:
            raise NoteError(f"ML-DSA-65 public key must be {MLDSA_PUBLIC_SIZE} bytes")
        object.__setattr__(self, "key_id", _pq_key_id(self.name, self.public_key))


@dataclass(frozen=True)
class PQSigner:
    """An ML-DSA-65 note signing key (a 32-byte FIPS 204 seed, kept out of repr)."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != MLDSA_SEED_SIZE:
            raise NoteError(f"ML-DSA-65 seed must be {MLDSA_SEED_SIZE} bytes")
        key_id(self.name, PQ_TYPE[0], b"")  # checks the name

    @property
    def verifier(self) -> PQVerifier:
        key = mldsa.MLDSA65PrivateKey.from_seed_bytes(self.seed)
        return PQVerifier(self.name, key.public_key().public_bytes_raw())


def format_pq_verifier_key(verifier: PQVerifier) -> str:
    """Return ``name+hexkeyid+base64(PQ_TYPE || public key)``."""
    key64 = base64.b64encode(PQ_TYPE + verifier.public_key).decode("ascii")
    return f"{verifier.name}+{verifier.key_id.hex()}+{key64}"


def parse_pq_verifier_key(s: str) -> PQVerifier:
    """Parse an ML-DSA-65 verifier key string. Raises NoteError when it is malformed, of
    another type (an Ed25519 key string, say), or its key ID does not match the key."""
    if not isinstance(s, str):
        raise NoteError("verifier key must be a string")
    name, _, rest = s.partition("+")
    hex_id, _, key64 = rest.partition("+")
    if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
        raise NoteError("malformed ML-DSA-65 verifier key: key ID must be 8 hex digits")
    try:
        raw = base64.b64decode(key64, validate=True)
    except ValueError:
        raise NoteError("malformed ML-DSA-65 verifier key: key is not base64") from None
    if not raw.startswith(PQ_TYPE):
        raise NoteError(
            "not an ML-DSA-65 note key (type 0xff sealed-notice-broker/ml-dsa-65/v1); "
            "an Ed25519 log key goes in log.pub, this one in log-pq.pub"
        )
    verifier = PQVerifier(name, raw[len(PQ_TYPE) :])
    if verifier.key_id != bytes.fromhex(hex_id):
        raise NoteError("ML-DSA-65 verifier key ID does not match the key")
    return verifier


def pq_signature_line(text: str, signer: PQSigner) -> str:
    """Return ``— name base64(key ID || ML-DSA-65(text))`` (no newline) for a note text."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    key = mldsa.MLDSA65PrivateKey.from_seed_bytes(signer.seed)
    signature = key.sign(text.encode("utf-8"), MLDSA_NOTE_CONTEXT)
    return NoteSignature(signer.name, signer.verifier.key_id, signature).line


def add_pq_signature(note: str, signer: PQSigner) -> str:
    """Append the ML-DSA-65 line to a signed note (its text being everything before the
    last blank line). Raises NoteError when the note has no signature block."""
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("note has no blank line before its signatures")
    return f"{note}{pq_signature_line(note[: split + 1], signer)}\n"


def carries_line_of(note: str, signer: PQSigner) -> bool:
    """True iff the note has a signature line under the signer's key name and key ID
    (unverified: for the signer to know whether it signed already)."""
    start, kid = f"\u2014 {signer.name} ", signer.verifier.key_id
    for line in note.split("\n"):
        if line.startswith(start):
            try:
                if base64.b64decode(line[len(start) :], validate=True)[:4] == kid:
                    return True
            except ValueError:
                continue
    return False


def _valid(verifier: PQVerifier, text: bytes, payload: bytes) -> bool:
    if len(payload) != MLDSA_SIGNATURE_SIZE:
        return False
    try:
        mldsa.MLDSA65PublicKey.from_public_bytes(verifier.public_key).verify(
            payload, text, MLDSA_NOTE_CONTEXT
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def has_pq_signature(opened: SignedNote, verifier: PQVerifier) -> bool:
    """True iff the opened note carries at least one line from `verifier`'s key and every
    line from it verifies over the note text (lines from keys open_note did not know are
    in ``opened.unverified``)."""
    lines = [s for s in opened.unverified if (s.name, s.key_id) == (verifier.name, verifier.key_id)]
    text = opened.text.encode("utf-8")
    return bool(lines) and all(_valid(verifier, text, s.payload) for s in lines)


def require_pq_signature(opened: SignedNote, verifier: PQVerifier) -> None:
    """Raise NoteError unless :func:`has_pq_signature`, saying which it is."""
    mine = [s for s in opened.unverified if (s.name, s.key_id) == (verifier.name, verifier.key_id)]
    if not mine:
        raise NoteError(
            f"the note carries no ML-DSA-65 signature from {verifier.name} (a hybrid log "
            "key is expected: an Ed25519 signature alone is not enough)"
        )
    if not has_pq_signature(opened, verifier):
        raise NoteError(f"invalid ML-DSA-65 signature from {verifier.name}")
