"""Free-text reasons sealed to the agencies told (issue 9, item 6).

A lifecycle action's reason (why a notice is withdrawn, flagged, extended ...) can name
people, so the broker must not keep it: the signed action carries only its SHA-256
("sha256:<hex>", what the broker stores and logs) and one libsodium sealed box of the
text per agency it is for, under that agency's CA-certified X25519 key. The receiving
node opens its own box and checks the text against the signed digest.

Whom a reason is sealed for: the actor itself; the originator's actions, everyone the
newest version was sealed for (the node's own record of its wraps); a recipient's
actions (flags, flag lift requests), the originator. Other holders told of a recipient's
flag get the signed digest without the text (a recipient does not know the audience).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import nacl.bindings
import nacl.exceptions

from broker.core.lifecycle import MAX_REASON_BYTES, reason_digest
from broker.errors import InvalidArgument
from broker.v1 import notice_pb2


def seal_reason(
    reason: str, keys: Mapping[str, bytes]
) -> tuple[str, list[notice_pb2.SealedReason]]:
    """(the digest to sign in `reason`, a sealed box of the text for each agency in
    `keys`: agency id -> X25519 public key)."""
    if not reason:
        return "", []
    text = reason.encode()
    if len(text) > MAX_REASON_BYTES:
        raise InvalidArgument(f"a reason is limited to {MAX_REASON_BYTES} bytes of UTF-8")
    return reason_digest(reason), [
        notice_pb2.SealedReason(agency_id=a, sealed=nacl.bindings.crypto_box_seal(text, key))
        for a, key in sorted(keys.items())
    ]


def open_reason(action: notice_pb2.LifecycleAction, me: str, private_key: bytes) -> str:
    """The reason's text if it was sealed for `me` and matches the signed digest; the
    signed digest itself otherwise (a reason not meant for this agency); a plain reason
    as signed (actions from before reasons were sealed, the broker's own)."""
    if not action.reason.startswith("sha256:"):
        return action.reason
    box = next((s.sealed for s in action.sealed_reason if s.agency_id == me), None)
    if box is None:
        return action.reason
    public_key = nacl.bindings.crypto_scalarmult_base(private_key)
    try:
        text = nacl.bindings.crypto_box_seal_open(box, public_key, private_key)
    except nacl.exceptions.CryptoError:
        return action.reason
    if "sha256:" + hashlib.sha256(text).hexdigest() != action.reason:
        return action.reason  # a box the actor did not sign for this text: ignored
    return text.decode("utf-8", "replace")
