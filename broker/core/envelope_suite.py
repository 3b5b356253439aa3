"""Constants, errors and primitives of the suite "ed25519+xchacha20poly1305+x25519box/v1".

- Ed25519 signatures (RFC 8032) through `cryptography`.
- Section encryption: XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha, the AEAD of
  RFC 8439 with a 192-bit nonce), ciphertext = nonce || sealed, plus a key
  commitment HMAC-SHA256 (RFC 2104) because the AEAD alone is not committing.
- Key wraps: libsodium sealed boxes (X25519 + XSalsa20-Poly1305, RFC 7748 key
  agreement), built here from a caller-supplied ephemeral seed so that sealing is
  deterministic given the rng; the bytes are exactly what crypto_box_seal makes.
- Tree layout: padding to a power of two and an unbiased Fisher-Yates shuffle.
- Restrictions commitment: SHA-256 over a context, a 32-byte random salt and the
  serialized restrictions, so the low-entropy audience cannot be guessed from it.

Pure: every random byte comes from the caller's `rng`, via :func:`draw`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Callable
from typing import TypeVar

import nacl.bindings
import nacl.exceptions
from google.protobuf.message import DecodeError, Message

from broker.core import bounds
from broker.errors import BrokerError, InvalidArgument

Rng = Callable[[int], bytes]
_M = TypeVar("_M", bound=Message)

SUITE = "ed25519+xchacha20poly1305+x25519box/v1"
HEADER_CONTEXT = b"broker.v1 notice header\x00"
FORMAT = 1
OPEN_FAILED = "sealed notice could not be opened"
SECTION_NAME = re.compile(r"[a-z0-9_]{1,32}")

KEY_SIZE = 32  # XChaCha20-Poly1305 key, X25519 keys, Ed25519 seeds and public keys
NONCE_SIZE = 24  # XChaCha20 nonce
TAG_SIZE = 16  # Poly1305 tag
SIGNATURE_SIZE = 64
DIGEST_SIZE = 32  # SHA-256
MIN_SECTION_CIPHERTEXT = NONCE_SIZE + TAG_SIZE
SEAL_OVERHEAD = KEY_SIZE + TAG_SIZE  # ephemeral public key || Poly1305 tag
PADDING_LEAF_SIZE = 32
MIN_TREE_SIZE = 4
SALT_SIZE = 32  # Envelope.restrictions_salt

SECTION_CONTEXT = b"broker.v1 section\x00"
COMMITMENT_CONTEXT = b"broker.v1 key commitment\x00"
RESTRICTIONS_CONTEXT = b"broker.v1 restrictions\x00"


class EnvelopeError(InvalidArgument):
    """An envelope or seal input is malformed; the message names the field."""


class SignatureError(EnvelopeError):
    """The header signature does not verify with the originator's key."""


class OpenError(BrokerError):
    """A delivery could not be opened. Always the same text, whatever the cause."""

    def __init__(self) -> None:
        super().__init__(OPEN_FAILED)


def parse(cls: type[_M], data: bytes) -> _M:
    """Return data parsed as a cls message. Raises DecodeError."""
    msg = cls()
    msg.ParseFromString(data)
    return msg


def parse_field(cls: type[_M], data: bytes, what: str) -> _M:
    """Return data parsed as a cls message, checked against its bounds (broker.core.bounds).

    Raises EnvelopeError naming `what` (and the field out of bounds).
    """
    try:
        msg = parse(cls, data)
    except DecodeError:
        raise EnvelopeError(f"{what} is not a valid {cls.__name__}") from None
    try:
        bounds.check(msg, what)
    except bounds.BoundsError as exc:
        raise EnvelopeError(str(exc)) from None
    return msg


def serialize(msg: Message) -> bytes:
    """Return the deterministic serialization of msg (what gets signed or hashed)."""
    return msg.SerializeToString(deterministic=True)


def header_digest(header_bytes: bytes) -> bytes:
    """Return SHA-256 of the signed header bytes (the notice's identity in logs and receipts)."""
    return hashlib.sha256(header_bytes).digest()


def draw(rng: Rng, n: int) -> bytes:
    """Return rng(n).

    Raises ValueError if the rng does not return exactly n bytes (a caller bug).
    """
    out = rng(n)
    if not isinstance(out, bytes) or len(out) != n:
        raise ValueError(f"rng({n}) must return {n} bytes")
    return out


def sha256(data: bytes) -> bytes:
    """Return the SHA-256 digest of data."""
    return hashlib.sha256(data).digest()


def restrictions_digest(salt: bytes, restrictions: bytes) -> bytes:
    """Return SHA-256(RESTRICTIONS_CONTEXT || salt || restrictions), the header's commitment.

    The 32-byte random salt travels only in the Envelope (broker's copy), never in a
    Delivery, so a recipient cannot confirm guessed restrictions against the digest.
    Raises ValueError if salt is not SALT_SIZE bytes.
    """
    if len(salt) != SALT_SIZE:
        raise ValueError(f"restrictions salt must be {SALT_SIZE} bytes")
    return sha256(RESTRICTIONS_CONTEXT + salt + restrictions)


# --- Ed25519 (RFC 8032) ---------------------------------------------------------


# libsodium's Ed25519 (PyNaCl's bindings), not OpenSSL's (`cryptography`): the same
# RFC 8032 signatures byte for byte, verified in half the time on the bench machine (62 us
# against 126 us), and stricter. OpenSSL verifies under a small-order public key: with the
# identity point as the key, one signature (R = identity, S = 0) verifies for EVERY
# message, so receipts or headers under such a key would prove nothing. libsodium refuses
# small-order and non-canonical keys and R values, and S >= L.
# (tests/core/test_envelope.py::test_a_small_order_key_verifies_nothing)


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """Return the 64-byte Ed25519 signature of message under a 32-byte seed.

    Raises ValueError if the seed is not 32 bytes.
    """
    if len(seed) != KEY_SIZE:
        raise ValueError("Ed25519 seed must be 32 bytes")
    _public, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
    signed: bytes = nacl.bindings.crypto_sign(bytes(message), secret)
    return signed[:SIGNATURE_SIZE]


def ed25519_public_key(seed: bytes) -> bytes:
    """Return the raw 32-byte Ed25519 public key of a 32-byte seed.

    Raises ValueError if the seed is not 32 bytes.
    """
    if len(seed) != KEY_SIZE:
        raise ValueError("Ed25519 seed must be 32 bytes")
    public: bytes = nacl.bindings.crypto_sign_seed_keypair(seed)[0]
    return public


def ed25519_usable_key(public_key: bytes) -> bool:
    """Return True iff public_key is a canonical Ed25519 point of large order: under a
    small-order key one signature verifies for every message, so nothing signed under it
    proves anything (loaders refuse such keys; ed25519_valid refuses their signatures)."""
    return len(public_key) == KEY_SIZE and bool(
        nacl.bindings.crypto_core_ed25519_is_valid_point(bytes(public_key))
    )


def ed25519_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Return True iff signature is a valid Ed25519 signature of message (RFC 8032 5.1.7,
    with libsodium's checks: no small-order or non-canonical key or R, S < L).

    Never raises: a malformed key or signature is simply not valid.
    """
    if len(public_key) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        nacl.bindings.crypto_sign_open(bytes(signature) + bytes(message), bytes(public_key))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


# --- sections -------------------------------------------------------------------


def _prefixed(value: str) -> bytes:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes cannot be length-prefixed")
    return struct.pack(">H", len(data)) + data


def section_aad(notice_id: str, version: int, originator: str, name: str) -> bytes:
    """Return the AEAD associated data binding a section to its notice.

    SECTION_CONTEXT || lp(notice_id) || u32be(version) || lp(originator) || lp(name),
    lp = u16be length prefix. Raises ValueError if a field does not fit.
    """
    return (
        SECTION_CONTEXT
        + _prefixed(notice_id)
        + struct.pack(">I", version)
        + _prefixed(originator)
        + _prefixed(name)
    )


def key_commitment(key: bytes, aad: bytes) -> bytes:
    """Return HMAC-SHA256(key, COMMITMENT_CONTEXT || aad) (RFC 2104)."""
    return hmac.new(key, COMMITMENT_CONTEXT + aad, hashlib.sha256).digest()


def encrypt_section(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Return nonce || XChaCha20-Poly1305(key, nonce, plaintext, aad)."""
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    return nonce + bytes(sealed)


def decrypt_section(key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Return the plaintext of nonce || sealed.

    Raises ValueError if the ciphertext is too short or does not authenticate.
    """
    if len(ciphertext) < MIN_SECTION_CIPHERTEXT:
        raise ValueError("section ciphertext too short")
    nonce, sealed = ciphertext[:NONCE_SIZE], ciphertext[NONCE_SIZE:]
    try:
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, aad, nonce, key)
    except nacl.exceptions.CryptoError as exc:
        raise ValueError("section does not authenticate") from exc
    return bytes(plain)


# --- sealed boxes (libsodium crypto_box_seal) ------------------------------------


def seal_box(message: bytes, recipient_public_key: bytes, ephemeral_seed: bytes) -> bytes:
    """Return epk || crypto_box(message, nonce, recipient_pk, esk).

    This is libsodium's crypto_box_seal with the ephemeral key pair derived from
    `ephemeral_seed` (crypto_box_seed_keypair) and nonce = BLAKE2b-192(epk || pk)
    (RFC 7693, unkeyed), so crypto_box_seal_open opens it.
    Raises ValueError if the public key is not 32 bytes or is a low-order point.
    """
    if len(recipient_public_key) != KEY_SIZE:
        raise ValueError("X25519 public key must be 32 bytes")
    epk, esk = nacl.bindings.crypto_box_seed_keypair(ephemeral_seed)
    nonce = hashlib.blake2b(bytes(epk) + recipient_public_key, digest_size=NONCE_SIZE).digest()
    try:
        boxed = nacl.bindings.crypto_box_easy(message, nonce, recipient_public_key, esk)
    except nacl.exceptions.CryptoError as exc:
        raise ValueError("X25519 public key is not usable") from exc
    return bytes(epk) + bytes(boxed)


def seal_boxes(messages: list[tuple[bytes, bytes]], ephemeral_seed: bytes) -> list[bytes]:
    """Seal each (message, recipient public key) as :func:`seal_box` does, all with ONE
    ephemeral key pair derived from `ephemeral_seed`: half the X25519 work of a fresh
    pair per recipient. Each result is an ordinary sealed box (crypto_box_seal_open opens
    it): its nonce BLAKE2b-192(epk || pk) and its key X25519(esk, pk) differ for every
    recipient key, so no key and nonce pair is ever used twice, as long as no two
    recipients share a public key. Raises ValueError if two do, or a key is unusable.
    """
    keys = [pk for _m, pk in messages]
    if len(set(keys)) != len(keys):
        raise ValueError("two recipients have the same X25519 public key")
    epk, esk = nacl.bindings.crypto_box_seed_keypair(ephemeral_seed)
    epk = bytes(epk)
    out = []
    for message, recipient_public_key in messages:
        if len(recipient_public_key) != KEY_SIZE:
            raise ValueError("X25519 public key must be 32 bytes")
        nonce = hashlib.blake2b(epk + recipient_public_key, digest_size=NONCE_SIZE).digest()
        try:
            boxed = nacl.bindings.crypto_box_easy(message, nonce, recipient_public_key, esk)
        except nacl.exceptions.CryptoError as exc:
            raise ValueError("X25519 public key is not usable") from exc
        out.append(epk + bytes(boxed))
    return out


def open_box(sealed: bytes, private_key: bytes, public_key: bytes | None = None) -> bytes:
    """Return the message of a sealed box addressed to `private_key`'s public key
    (`public_key`, if the caller already has it: it saves a scalar multiplication).

    Raises ValueError if the key is not 32 bytes or the box does not open.
    """
    if len(private_key) != KEY_SIZE or len(sealed) < SEAL_OVERHEAD:
        raise ValueError("sealed box or key malformed")
    try:
        if public_key is None:
            public_key = nacl.bindings.crypto_scalarmult_base(private_key)
        plain = nacl.bindings.crypto_box_seal_open(sealed, public_key, private_key)
    except nacl.exceptions.CryptoError as exc:
        raise ValueError("sealed box does not open") from exc
    return bytes(plain)


# --- tree layout ------------------------------------------------------------------


def tree_size_for(count: int) -> int:
    """Return the smallest power of two >= max(count, MIN_TREE_SIZE)."""
    size = MIN_TREE_SIZE
    while size < count:
        size <<= 1
    return size


def is_tree_size(size: int) -> bool:
    """Return True iff size is a power of two >= MIN_TREE_SIZE."""
    return size >= MIN_TREE_SIZE and size & (size - 1) == 0


def uniform(rng: Rng, bound: int) -> int:
    """Return an unbiased integer in range(bound), 1 <= bound <= 2**32.

    Draws u32be = rng(4) and rejects values >= 2**32 - (2**32 mod bound), then
    returns value mod bound (rejection sampling: no modulo bias).
    """
    limit = (1 << 32) - (1 << 32) % bound
    while True:
        value = int.from_bytes(draw(rng, 4), "big")
        if value < limit:
            return value % bound


def shuffled_positions(size: int, rng: Rng) -> list[int]:
    """Return a uniformly random permutation of range(size).

    Fisher-Yates (Knuth, TAOCP vol. 2, Algorithm P): positions = [0..size-1];
    for i = size-1 down to 1: j = uniform(rng, i + 1); swap positions[i], positions[j].
    """
    positions = list(range(size))
    for i in range(size - 1, 0, -1):
        j = uniform(rng, i + 1)
        positions[i], positions[j] = positions[j], positions[i]
    return positions
