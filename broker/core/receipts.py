"""Signed delivery receipts, batched under one Ed25519 signature.

A recipient signs a batch of Receipt messages at once: the leaves are the
deterministic serializations of the receipts, in order, and the signature is
Ed25519 (RFC 8032) over RECEIPT_CONTEXT || u64be(n) || root, where root is the
RFC 9162 Merkle tree head of the n leaves. Each receipt stays provable on its own
as a ProvenReceipt (leaf, inclusion proof, root, signature). Pure.

Where the hybrid suite is in force (the signer's key statement carries an ML-DSA-65
key), the signature is the hybrid one of :mod:`broker.core.hybrid` over the same
RECEIPT_CONTEXT and message, and a verifier holding that statement accepts nothing
less (hybrid.valid_as): an Ed25519-only receipt from such a signer is refused.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from broker.core import bounds
from broker.core import envelope_suite as es
from broker.core import hybrid as hy
from broker.core.bounds import quote
from broker.core.merkle import ProofError, all_inclusion_proofs, leaf_hash, root_from_hashes
from broker.core.merkle import verify_inclusion as _verify_inclusion
from broker.errors import InvalidArgument
from broker.v1 import notice_pb2

RECEIPT_CONTEXT = b"broker.v1 receipt batch\x00"
MAX_BATCH = 1024


class ReceiptError(InvalidArgument):
    """A receipt batch or proven receipt is malformed or does not verify."""


def receipt_batch_message(root: bytes, size: int) -> bytes:
    """Return the signed message RECEIPT_CONTEXT || u64be(size) || root.

    Raises ReceiptError if root is not 32 bytes or size does not fit in a u64.
    """
    if len(root) != es.DIGEST_SIZE:
        raise ReceiptError("batch root must be 32 bytes")
    if not 0 <= size < 1 << 64:
        raise ReceiptError(f"batch size {size} does not fit in 64 bits")
    return RECEIPT_CONTEXT + struct.pack(">Q", size) + root


def _check_receipt(receipt: notice_pb2.Receipt, signer: str, what: str) -> None:
    if receipt.recipient != signer:
        raise ReceiptError(
            f"{what}.recipient {quote(receipt.recipient)} is not the signer {quote(signer)}"
        )
    if not receipt.notice_id or (receipt.version < 1 and not receipt.action_id):
        raise ReceiptError(f"{what} needs a notice_id and a version >= 1 (or an action_id)")
    if len(receipt.header_digest) != es.DIGEST_SIZE:
        raise ReceiptError(f"{what}.header_digest must be 32 bytes")


def _check_size(size: int) -> None:
    if not 1 <= size <= MAX_BATCH:
        raise ReceiptError(f"a receipt batch holds 1 to {MAX_BATCH} receipts, not {size}")


def sign_receipts(
    signer: str, receipts: Sequence[notice_pb2.Receipt], signing_key: bytes
) -> notice_pb2.ReceiptBatch:
    """Return a ReceiptBatch of `receipts` signed with the 32-byte Ed25519 seed `signing_key`,
    or hybrid (Ed25519 + ML-DSA-65) with a 64-byte hybrid signing key.

    Raises ReceiptError if there are no or more than MAX_BATCH receipts, a
    receipt's recipient is not `signer` or lacks its notice id, version or
    header digest, or the key is not 32 bytes.
    """
    if not signer:
        raise ReceiptError("signer is empty")
    _check_size(len(receipts))
    for i, receipt in enumerate(receipts):
        _check_receipt(receipt, signer, f"receipts[{i}]")
    if len(signing_key) not in (es.KEY_SIZE, hy.SIGNING_KEY_SIZE):
        raise ReceiptError("signing_key must be a 32-byte Ed25519 seed or a 64-byte hybrid key")
    leaves = [es.serialize(r) for r in receipts]
    root = root_from_hashes([leaf_hash(leaf) for leaf in leaves])
    message = receipt_batch_message(root, len(leaves))[len(RECEIPT_CONTEXT) :]
    return notice_pb2.ReceiptBatch(
        signer=signer,
        receipts=leaves,
        signature=hy.sign_as(signing_key, RECEIPT_CONTEXT, message),
    )


def _signature_valid(signing_key: bytes, signature: bytes, root: bytes, size: int) -> bool:
    message = receipt_batch_message(root, size)[len(RECEIPT_CONTEXT) :]
    return hy.valid_as(signing_key, signature, RECEIPT_CONTEXT, message)


def _parse_receipt(data: bytes, signer: str, what: str) -> notice_pb2.Receipt:
    try:
        receipt = es.parse(notice_pb2.Receipt, data)
    except DecodeError:
        raise ReceiptError(f"{what} is not a valid Receipt") from None
    try:
        bounds.check(receipt, what)
    except bounds.BoundsError as exc:
        raise ReceiptError(str(exc)) from None
    _check_receipt(receipt, signer, what)
    return receipt


def verify_receipt_batch(
    batch: notice_pb2.ReceiptBatch, signing_key: bytes
) -> list[notice_pb2.ProvenReceipt]:
    """Verify a batch against the signer's 32-byte Ed25519 public key (or its 1984-byte
    Ed25519 || ML-DSA-65 key: then only a hybrid signature verifies).

    The signature is checked over the root of the receipt bytes as sent, then
    every receipt must parse and name the signer as its recipient.
    Returns one ProvenReceipt per receipt, in batch order.
    Raises ReceiptError (what is wrong, which receipt).
    """
    return [p for p, _r in verify_receipts(batch, signing_key)]


def verify_receipts(
    batch: notice_pb2.ReceiptBatch, signing_key: bytes
) -> list[tuple[notice_pb2.ProvenReceipt, notice_pb2.Receipt]]:
    """As verify_receipt_batch, with each receipt also parsed: (proven, receipt) pairs."""
    if not batch.signer:
        raise ReceiptError("batch.signer is empty")
    _check_size(len(batch.receipts))
    hashes = [leaf_hash(leaf) for leaf in batch.receipts]
    root = root_from_hashes(hashes)
    if not _signature_valid(signing_key, batch.signature, root, len(hashes)):
        raise ReceiptError(f"batch.signature does not verify with the key of {quote(batch.signer)}")
    parsed = [
        _parse_receipt(leaf, batch.signer, f"receipts[{i}]")
        for i, leaf in enumerate(batch.receipts)
    ]
    proofs = all_inclusion_proofs(hashes)
    return [
        (
            notice_pb2.ProvenReceipt(
                receipt=leaf,
                leaf_index=i,
                batch_size=len(hashes),
                proof=proofs[i],
                batch_root=root,
                signature=batch.signature,
                signer=batch.signer,
            ),
            parsed[i],
        )
        for i, leaf in enumerate(batch.receipts)
    ]


def verify_proven_receipt(
    proven: notice_pb2.ProvenReceipt, signing_key: bytes
) -> notice_pb2.Receipt:
    """Check one receipt offline: its inclusion in batch_root and the signature over that root.

    `signing_key` is the verify key of `proven.signer` (as in verify_receipt_batch).
    Returns the parsed Receipt. Raises ReceiptError.
    """
    if not proven.signer:
        raise ReceiptError("proven.signer is empty")
    _check_size(proven.batch_size)
    if len(proven.batch_root) != es.DIGEST_SIZE:
        raise ReceiptError("proven.batch_root must be 32 bytes")
    try:
        _verify_inclusion(
            proven.leaf_index,
            proven.batch_size,
            leaf_hash(proven.receipt),
            proven.proof,
            proven.batch_root,
        )
    except ProofError as exc:
        raise ReceiptError(f"receipt is not included in the batch root: {exc}") from None
    if not _signature_valid(signing_key, proven.signature, proven.batch_root, proven.batch_size):
        raise ReceiptError(
            f"proven.signature does not verify with the key of {quote(proven.signer)}"
        )
    return _parse_receipt(proven.receipt, proven.signer, "proven.receipt")
