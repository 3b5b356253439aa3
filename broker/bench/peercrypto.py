"""The do-it-yourself end-to-end crypto of the peer pipelines (NATS and RabbitMQ).

What an agency could build in a day with PyNaCl: the publisher draws a fresh content
key, encrypts the ~2 KB body with XChaCha20-Poly1305 (the metadata as associated
data), wraps the key for every recipient with a libsodium sealed box (X25519), and
signs the whole message with Ed25519. A consumer verifies the signature, opens its
own wrap, decrypts the body. There is no policy, no per-section key, no Merkle
commitment, no replay check and no signed receipt: see docs/performance.md.

Message layout (all lengths big-endian):

    signature (64) || u16 len(meta) || meta (JSON: id, from, to[]) ||
    u8 n || n x wrap (80) || nonce (24) || ciphertext
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

from nacl import bindings
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

WRAP_SIZE = 32 + bindings.crypto_box_SEALBYTES  # a sealed 32-byte key
NONCE_SIZE = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


class PeerOpenError(Exception):
    """A peer message that does not verify or open (one error, whatever failed)."""


@dataclass(frozen=True)
class PeerKeys:
    """Seeds for one run: the publisher's signing key and each recipient's X25519 key."""

    signing_seed: bytes
    recipient_keys: dict[str, bytes]  # recipient id -> X25519 private key

    @classmethod
    def generate(cls, recipients: list[str]) -> PeerKeys:
        return cls(os.urandom(32), {r: os.urandom(32) for r in recipients})

    def as_spec(self) -> dict[str, object]:
        return {
            "signing_seed": self.signing_seed.hex(),
            "recipient_keys": {r: k.hex() for r, k in self.recipient_keys.items()},
        }

    @classmethod
    def from_spec(cls, spec: dict[str, object]) -> PeerKeys:
        keys = spec["recipient_keys"]
        assert isinstance(keys, dict)
        return cls(
            bytes.fromhex(str(spec["signing_seed"])), {r: bytes.fromhex(k) for r, k in keys.items()}
        )


class Sealer:
    """The publisher's side."""

    def __init__(self, keys: PeerKeys, sender: str) -> None:
        self.signing = SigningKey(keys.signing_seed)
        self.sender = sender
        self.recipients = sorted(keys.recipient_keys)
        self.boxes = [
            SealedBox(PublicKey(bytes(PrivateKey(keys.recipient_keys[r]).public_key)))
            for r in self.recipients
        ]

    def seal(self, notice_id: str, body: bytes) -> bytes:
        meta = json.dumps(
            {"id": notice_id, "from": self.sender, "to": self.recipients}, separators=(",", ":")
        ).encode()
        key = os.urandom(32)
        nonce = os.urandom(NONCE_SIZE)
        ciphertext = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(body, meta, nonce, key)
        wraps = b"".join(box.encrypt(key) for box in self.boxes)
        payload = (
            struct.pack(">H", len(meta)) + meta + bytes([len(self.boxes)]) + wraps + nonce
        ) + ciphertext
        return self.signing.sign(payload).signature + payload


class Opener:
    """One recipient's side."""

    def __init__(self, keys: PeerKeys, me: str) -> None:
        self.me = me
        self.verify = VerifyKey(bytes(SigningKey(keys.signing_seed).verify_key))
        self.box = SealedBox(PrivateKey(keys.recipient_keys[me]))

    def open(self, message: bytes) -> tuple[str, bytes]:
        """(notice id, body); raises PeerOpenError if anything is wrong."""
        try:
            signature, payload = message[:64], message[64:]
            self.verify.verify(payload, signature)
            (meta_len,) = struct.unpack_from(">H", payload, 0)
            meta_bytes = payload[2 : 2 + meta_len]
            meta = json.loads(meta_bytes)
            index = meta["to"].index(self.me)
            at = 2 + meta_len
            n = payload[at]
            wraps_at = at + 1
            wrap = payload[wraps_at + index * WRAP_SIZE : wraps_at + (index + 1) * WRAP_SIZE]
            key = self.box.decrypt(wrap)
            nonce_at = wraps_at + n * WRAP_SIZE
            nonce = payload[nonce_at : nonce_at + NONCE_SIZE]
            body = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                payload[nonce_at + NONCE_SIZE :], meta_bytes, nonce, key
            )
        except Exception as exc:
            raise PeerOpenError("the message does not verify or open") from exc
        return str(meta["id"]), bytes(body)
