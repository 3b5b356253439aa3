"""Primitives of the hybrid suite "ed25519mldsa65+xchacha20poly1305+hpke-mlkem768x25519/v1".

What changes against the classical suite (:mod:`broker.core.envelope_suite`); sections,
trees, commitments and padding stay exactly as they are:

- Signatures: Ed25519 (RFC 8032) AND ML-DSA-65 (FIPS 204), both over the same message
  M = HYBRID_CONTEXT || lp(suite) || lp(context) || message, lp = u16be length prefix;
  the ML-DSA half also carries FIPS 204 context string MLDSA_CONTEXT. The signature is
  Ed25519(64) || ML-DSA-65(3309); it verifies only if BOTH halves do. Because M names the
  suite and the context (header, receipt batch ...), the Ed25519 half of a hybrid signature
  never verifies as a classical signature (which is Ed25519 over context || message): a
  half cannot be stripped off and reused, and no suite can be swapped for another.
- Key wraps: HPKE (RFC 9180) base mode, single shot, KEM MLKEM768-X25519 (the X-Wing
  style hybrid, secure while either ML-KEM-768 or X25519 holds), HKDF-SHA256 and
  ChaCha20-Poly1305; the sealed bytes are enc (1120) || ciphertext, `info` binds the
  suite, notice id, version and recipient (:func:`wrap_info`).

Key encodings (raw bytes, what key statements and key files hold):

- hybrid signing key = Ed25519 seed (32) || ML-DSA-65 seed (32): 64 bytes;
- hybrid verify key = Ed25519 public (32) || ML-DSA-65 public (1952): 1984 bytes;
- KEM private key = ML-KEM-768 seed (64) || X25519 private (32): 96 bytes;
- KEM public key = ML-KEM-768 encapsulation key (1184) || X25519 public (32): 1216 bytes.

Purity: the core draws nothing itself. Two library calls are randomized inside the
library, which offers no way to pass the randomness in: ML-DSA signing is hedged
(FIPS 204 section 3.4) and HPKE encapsulation makes a fresh ephemeral key. Sealing
therefore takes the encapsulation as a parameter (:data:`Encapsulate`, default
:func:`hpke_seal`), so known-answer tests of the envelope layer can fix HPKE outputs;
every ML-DSA signature is checked by verifying it, never by comparing bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem, x25519

from broker.core import envelope_suite as es

SUITE_HYBRID = "ed25519mldsa65+xchacha20poly1305+hpke-mlkem768x25519/v1"
SUITES = (es.SUITE, SUITE_HYBRID)
SUITE_NAMES = {"classical": es.SUITE, "hybrid": SUITE_HYBRID}  # short names for config and CLI

HYBRID_CONTEXT = b"broker.v1 hybrid signature\x00"
MLDSA_CONTEXT = b"broker.v1"  # FIPS 204 ctx string of every ML-DSA signature here
WRAP_INFO = b"broker.v1 hybrid wrap\x00"

ED25519_SIZE = 32
MLDSA_SEED_SIZE = 32
MLDSA_PUBLIC_SIZE = 1952
MLDSA_SIGNATURE_SIZE = 3309
SIGNING_KEY_SIZE = ED25519_SIZE + MLDSA_SEED_SIZE  # 64
VERIFY_KEY_SIZE = ED25519_SIZE + MLDSA_PUBLIC_SIZE  # 1984
SIGNATURE_SIZE = es.SIGNATURE_SIZE + MLDSA_SIGNATURE_SIZE  # 3373

MLKEM_SEED_SIZE = 64
MLKEM_PUBLIC_SIZE = 1184
KEM_PRIVATE_SIZE = MLKEM_SEED_SIZE + ED25519_SIZE  # 96
KEM_PUBLIC_SIZE = MLKEM_PUBLIC_SIZE + ED25519_SIZE  # 1216
ENC_SIZE = hpke.KEM.MLKEM768_X25519.enc_length()  # 1120
HPKE_TAG_SIZE = 16
MIN_WRAP_SIZE = ENC_SIZE + HPKE_TAG_SIZE

_HPKE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)

Encapsulate = Callable[[bytes, bytes, bytes], bytes]  # (KEM public key, plaintext, info) -> sealed


def suite_of(name: str) -> str:
    """Return the suite id of a short name ("classical", "hybrid") or of a full suite id.

    Raises ValueError naming the choices.
    """
    if name in SUITE_NAMES:
        return SUITE_NAMES[name]
    if name in SUITES:
        return name
    raise ValueError(f"unknown suite {name!r}; choose one of {sorted(SUITE_NAMES)}")


def short_name(suite: str) -> str:
    """Return "classical" or "hybrid" for a suite id (the id itself if unknown)."""
    for short, full in SUITE_NAMES.items():
        if full == suite:
            return short
    return suite


def _lp(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes cannot be length-prefixed")
    return struct.pack(">H", len(data)) + data


# --- signatures ---------------------------------------------------------------------


def hybrid_message(context: bytes, message: bytes, suite: str = SUITE_HYBRID) -> bytes:
    """Return HYBRID_CONTEXT || lp(suite) || lp(context) || message: what both halves sign."""
    return HYBRID_CONTEXT + _lp(suite.encode()) + _lp(context) + message


def mldsa_public_key(seed: bytes) -> bytes:
    """Return the 1952-byte ML-DSA-65 public key of a 32-byte seed. Raises ValueError."""
    if len(seed) != MLDSA_SEED_SIZE:
        raise ValueError("ML-DSA-65 seed must be 32 bytes")
    return mldsa.MLDSA65PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()


def verify_key(signing_key: bytes) -> bytes:
    """Return the 1984-byte hybrid verify key of a 64-byte hybrid signing key. Raises ValueError."""
    if len(signing_key) != SIGNING_KEY_SIZE:
        raise ValueError(f"hybrid signing key must be {SIGNING_KEY_SIZE} bytes")
    return es.ed25519_public_key(signing_key[:ED25519_SIZE]) + mldsa_public_key(
        signing_key[ED25519_SIZE:]
    )


def hybrid_sign(signing_key: bytes, context: bytes, message: bytes) -> bytes:
    """Return Ed25519(M) || ML-DSA-65(M, ctx=MLDSA_CONTEXT), M = :func:`hybrid_message`.

    Raises ValueError if signing_key is not a 64-byte hybrid signing key.
    """
    if len(signing_key) != SIGNING_KEY_SIZE:
        raise ValueError(f"hybrid signing key must be {SIGNING_KEY_SIZE} bytes")
    m = hybrid_message(context, message)
    pq = mldsa.MLDSA65PrivateKey.from_seed_bytes(signing_key[ED25519_SIZE:])
    return es.ed25519_sign(signing_key[:ED25519_SIZE], m) + pq.sign(m, MLDSA_CONTEXT)


def mldsa_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Return True iff signature is a valid ML-DSA-65 signature (ctx MLDSA_CONTEXT).

    Never raises.
    """
    if len(public_key) != MLDSA_PUBLIC_SIZE or len(signature) != MLDSA_SIGNATURE_SIZE:
        return False
    try:
        mldsa.MLDSA65PublicKey.from_public_bytes(public_key).verify(
            signature, message, MLDSA_CONTEXT
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def hybrid_valid(key: bytes, signature: bytes, context: bytes, message: bytes) -> bool:
    """Return True iff BOTH halves of a hybrid signature verify under a 1984-byte verify key.

    Never raises: a malformed key or signature is not valid.
    """
    if len(key) != VERIFY_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    m = hybrid_message(context, message)
    ed_ok = es.ed25519_valid(key[:ED25519_SIZE], signature[: es.SIGNATURE_SIZE], m)
    pq_ok = mldsa_valid(key[ED25519_SIZE:], signature[es.SIGNATURE_SIZE :], m)
    return ed_ok and pq_ok


def sign_as(signing_key: bytes, context: bytes, message: bytes) -> bytes:
    """Sign with whatever the key is: a 32-byte Ed25519 seed signs Ed25519(context || message)
    (the classical form); a 64-byte hybrid signing key signs :func:`hybrid_sign`.

    Raises ValueError for any other length.
    """
    if len(signing_key) == es.KEY_SIZE:
        return es.ed25519_sign(signing_key, context + message)
    if len(signing_key) == SIGNING_KEY_SIZE:
        return hybrid_sign(signing_key, context, message)
    raise ValueError(f"signing key must be {es.KEY_SIZE} or {SIGNING_KEY_SIZE} bytes")


def valid_as(key: bytes, signature: bytes, context: bytes, message: bytes) -> bool:
    """Verify as the signer's key demands: a 32-byte Ed25519 key accepts the classical form
    only; a 1984-byte hybrid verify key accepts only a hybrid signature, so a signer with a
    post-quantum key can never be held to an Ed25519 signature alone (no downgrade).
    Never raises.
    """
    if len(key) == es.KEY_SIZE:
        return es.ed25519_valid(key, signature, context + message)
    return hybrid_valid(key, signature, context, message)


def join_verify_key(ed25519_key: bytes, mldsa_key: bytes) -> bytes:
    """Return an agency's verify key: Ed25519 alone, or Ed25519 || ML-DSA-65 if it has one."""
    return ed25519_key + mldsa_key


# --- HPKE key wraps (RFC 9180) --------------------------------------------------------


def kem_private_key(private: bytes) -> hpke.MLKEM768X25519PrivateKey:
    """Return the library key of a 96-byte KEM private key. Raises ValueError."""
    if len(private) != KEM_PRIVATE_SIZE:
        raise ValueError(f"KEM private key must be {KEM_PRIVATE_SIZE} bytes")
    return hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:MLKEM_SEED_SIZE]),
        x25519.X25519PrivateKey.from_private_bytes(private[MLKEM_SEED_SIZE:]),
    )


def kem_public_key_bytes(private: bytes) -> bytes:
    """Return the 1216-byte KEM public key of a 96-byte KEM private key. Raises ValueError."""
    if len(private) != KEM_PRIVATE_SIZE:
        raise ValueError(f"KEM private key must be {KEM_PRIVATE_SIZE} bytes")
    ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:MLKEM_SEED_SIZE]).public_key()
    xk = x25519.X25519PrivateKey.from_private_bytes(private[MLKEM_SEED_SIZE:]).public_key()
    return ml.public_bytes_raw() + xk.public_bytes_raw()


def kem_public_key(public: bytes) -> hpke.MLKEM768X25519PublicKey:
    """Return the library key of a 1216-byte KEM public key. Raises ValueError."""
    if len(public) != KEM_PUBLIC_SIZE:
        raise ValueError(f"KEM public key must be {KEM_PUBLIC_SIZE} bytes")
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(public[:MLKEM_PUBLIC_SIZE]),
        x25519.X25519PublicKey.from_public_bytes(public[MLKEM_PUBLIC_SIZE:]),
    )


def wrap_info(notice_id: str, version: int, recipient: str, suite: str = SUITE_HYBRID) -> bytes:
    """Return the HPKE info of a key wrap: WRAP_INFO || lp(suite) || lp(notice_id) ||
    u32be(version) || lp(recipient). Raises ValueError if a field does not fit."""
    return (
        WRAP_INFO
        + _lp(suite.encode())
        + _lp(notice_id.encode())
        + struct.pack(">I", version)
        + _lp(recipient.encode())
    )


def hpke_seal(public_key: bytes, plaintext: bytes, info: bytes) -> bytes:
    """Return enc || ciphertext: HPKE base mode single-shot seal to a 1216-byte KEM key.

    The library draws the ephemeral key. Raises ValueError if the key is malformed.
    """
    return _HPKE.encrypt(plaintext, kem_public_key(public_key), info=info)


def hpke_open(private_key: bytes, sealed: bytes, info: bytes) -> bytes:
    """Return the plaintext of enc || ciphertext sealed to a 96-byte KEM private key.

    Raises ValueError if the key is malformed or the wrap does not open.
    """
    if len(sealed) < MIN_WRAP_SIZE:
        raise ValueError("HPKE wrap too short")
    try:
        return _HPKE.decrypt(sealed, kem_private_key(private_key), info=info)
    except InvalidTag as exc:
        raise ValueError("HPKE wrap does not open") from exc
