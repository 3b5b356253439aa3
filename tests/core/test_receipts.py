"""Receipt batches: known answer, round trips, and tampering.

The known-answer constants were computed once from this implementation with the
fixed seed below; the signature is deterministic (RFC 8032 Ed25519).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import envelope_suite as es
from broker.core.merkle import leaf_hash, root_from_hashes
from broker.core.receipts import (
    MAX_BATCH,
    RECEIPT_CONTEXT,
    ReceiptError,
    receipt_batch_message,
    sign_receipts,
    verify_proven_receipt,
    verify_receipt_batch,
)
from broker.v1 import notice_pb2

SEED = hashlib.sha256(b"test recipient DE-BKA signing").digest()
PUBLIC = es.ed25519_public_key(SEED)
OTHER_PUBLIC = es.ed25519_public_key(hashlib.sha256(b"test someone else").digest())
SIGNER = "DE-BKA"


def receipt(i: int, recipient: str = SIGNER) -> notice_pb2.Receipt:
    return notice_pb2.Receipt(
        notice_id=f"00000000-0000-4000-8000-{i:012d}",
        version=1,
        recipient=recipient,
        header_digest=hashlib.sha256(f"header {i}".encode()).digest(),
        sections=["case_facts", "identity"],
        received_at_ms=1_790_000_000_000 + i,
    )


RECEIPTS = [receipt(i) for i in range(3)]
BATCH = sign_receipts(SIGNER, RECEIPTS, SEED)

KAT_ROOT = "44cc43f7beeee35330fe15472005cc2279ac7d6a899fe2d55c087d7333e6de19"
KAT_SIGNATURE = (
    "eb8f70664b8c69527a4ea6e7692ed27b6c1440652676eae88987b26e9f2e693e"
    "344b5d111957dc7461ebe24336cfafa04940c3c7fa7c06e6f774f21d9c6ae702"
)


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def test_message_layout() -> None:
    root = bytes(range(32))
    assert receipt_batch_message(root, 3) == RECEIPT_CONTEXT + struct.pack(">Q", 3) + root
    assert RECEIPT_CONTEXT == b"broker.v1 receipt batch\x00"
    with pytest.raises(ReceiptError, match="32 bytes"):
        receipt_batch_message(b"x", 3)


def test_known_answer() -> None:
    leaves = [r.SerializeToString(deterministic=True) for r in RECEIPTS]
    root = root_from_hashes([leaf_hash(leaf) for leaf in leaves])
    assert list(BATCH.receipts) == leaves
    assert BATCH.signer == SIGNER
    assert root.hex() == KAT_ROOT
    assert BATCH.signature.hex() == KAT_SIGNATURE
    assert es.ed25519_valid(PUBLIC, BATCH.signature, receipt_batch_message(root, 3))


def test_verify_batch_and_each_proven_receipt() -> None:
    proven = verify_receipt_batch(BATCH, PUBLIC)
    assert [p.leaf_index for p in proven] == [0, 1, 2]
    for p, original in zip(proven, RECEIPTS, strict=True):
        assert p.batch_size == 3 and p.signer == SIGNER and p.signature == BATCH.signature
        assert verify_proven_receipt(p, PUBLIC) == original


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_round_trip(n: int, salt: int) -> None:
    receipts = [receipt(salt + i) for i in range(n)]
    proven = verify_receipt_batch(sign_receipts(SIGNER, receipts, SEED), PUBLIC)
    assert len(proven) == n
    assert [verify_proven_receipt(p, PUBLIC) for p in proven] == receipts


# --------------------------------------------------------------------------- batch tampering

BatchEdit = Callable[[notice_pb2.ReceiptBatch], object]


def _reorder(b: notice_pb2.ReceiptBatch) -> None:
    first, second = b.receipts[0], b.receipts[1]
    b.receipts[0], b.receipts[1] = second, first


BATCH_CASES: dict[str, tuple[BatchEdit, str]] = {
    "signature flipped": (
        lambda b: setattr(b, "signature", flip(b.signature, 5)),
        "batch.signature does not verify",
    ),
    "signature empty": (lambda b: b.ClearField("signature"), "batch.signature does not verify"),
    "receipt flipped": (
        lambda b: b.receipts.__setitem__(1, flip(b.receipts[1], 3)),
        "batch.signature does not verify",
    ),
    "receipts reordered": (_reorder, "batch.signature does not verify"),
    "receipt dropped": (lambda b: b.receipts.pop(), "batch.signature does not verify"),
    "receipt added": (
        lambda b: b.receipts.append(receipt(9).SerializeToString()),
        "batch.signature does not verify",
    ),
    "signer changed": (
        lambda b: setattr(b, "signer", "NL-POLITIE"),
        r"receipts\[0\].recipient 'DE-BKA' is not the signer 'NL-POLITIE'",
    ),
    "signer empty": (lambda b: b.ClearField("signer"), "batch.signer is empty"),
    "empty": (lambda b: b.ClearField("receipts"), "1 to 1024 receipts, not 0"),
    "too many": (
        lambda b: b.receipts.extend([b.receipts[0]] * MAX_BATCH),
        "1 to 1024 receipts, not 1027",
    ),
}


@pytest.mark.parametrize("name", sorted(BATCH_CASES))
def test_tampered_batch_fails(name: str) -> None:
    edit, message = BATCH_CASES[name]
    batch = notice_pb2.ReceiptBatch()
    batch.CopyFrom(BATCH)
    edit(batch)
    with pytest.raises(ReceiptError, match=message):
        verify_receipt_batch(batch, PUBLIC)


def test_batch_wrong_key() -> None:
    with pytest.raises(ReceiptError, match="does not verify with the key of 'DE-BKA'"):
        verify_receipt_batch(BATCH, OTHER_PUBLIC)
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt_batch(BATCH, b"short")


def _signed_batch(leaves: list[bytes]) -> notice_pb2.ReceiptBatch:
    root = root_from_hashes([leaf_hash(leaf) for leaf in leaves])
    signature = es.ed25519_sign(SEED, receipt_batch_message(root, len(leaves)))
    return notice_pb2.ReceiptBatch(signer=SIGNER, receipts=leaves, signature=signature)


@pytest.mark.parametrize(
    ("leaf", "message"),
    [
        (b"\xff\xff", r"receipts\[1\] is not a valid Receipt"),
        (receipt(5, "EUROPOL").SerializeToString(), r"receipts\[1\].recipient 'EUROPOL'"),
        (
            notice_pb2.Receipt(recipient=SIGNER, version=1).SerializeToString(),
            r"receipts\[1\] needs a notice_id",
        ),
        (
            notice_pb2.Receipt(
                recipient=SIGNER, notice_id=RECEIPTS[0].notice_id, version=1
            ).SerializeToString(),
            r"receipts\[1\].header_digest must be 32 bytes",
        ),
        (
            notice_pb2.Receipt(recipient=SIGNER, notice_id="n", version=1).SerializeToString(),
            r"receipts\[1\].notice_id 'n' is not a lower-case UUID",
        ),
        (
            notice_pb2.Receipt(
                recipient=SIGNER, notice_id=RECEIPTS[0].notice_id, version=1, sections=["a", "a"]
            ).SerializeToString(),
            r"receipts\[1\].sections lists 'a' twice",
        ),
    ],
)
def test_signed_but_invalid_receipt_fails(leaf: bytes, message: str) -> None:
    batch = _signed_batch([RECEIPTS[0].SerializeToString(), leaf])
    with pytest.raises(ReceiptError, match=message):
        verify_receipt_batch(batch, PUBLIC)


# --------------------------------------------------------------------------- sign input


@pytest.mark.parametrize(
    ("signer", "receipts", "key", "message"),
    [
        ("", RECEIPTS, SEED, "signer is empty"),
        (SIGNER, [], SEED, "not 0"),
        (SIGNER, [RECEIPTS[0]] * (MAX_BATCH + 1), SEED, "not 1025"),
        (SIGNER, [receipt(1, "EUROPOL")], SEED, r"receipts\[0\].recipient 'EUROPOL'"),
        (SIGNER, RECEIPTS, b"short", "signing_key must be a 32-byte Ed25519 seed"),
    ],
)
def test_sign_receipts_rejects(
    signer: str, receipts: list[notice_pb2.Receipt], key: bytes, message: str
) -> None:
    with pytest.raises(ReceiptError, match=message):
        sign_receipts(signer, receipts, key)


def test_sign_max_batch() -> None:
    batch = sign_receipts(SIGNER, [receipt(i) for i in range(MAX_BATCH)], SEED)
    assert len(verify_receipt_batch(batch, PUBLIC)) == MAX_BATCH


# --------------------------------------------------------------------------- proven tampering

PROVEN = verify_receipt_batch(BATCH, PUBLIC)[1]
ProvenEdit = Callable[[notice_pb2.ProvenReceipt], object]

PROVEN_CASES: dict[str, tuple[ProvenEdit, str]] = {
    "receipt flipped": (
        lambda p: setattr(p, "receipt", flip(p.receipt, 2)),
        "not included in the batch root",
    ),
    "leaf_index": (lambda p: setattr(p, "leaf_index", 0), "not included in the batch root"),
    "leaf_index outside": (lambda p: setattr(p, "leaf_index", 3), "not included"),
    # index 1 recomputes the same root in sizes 3 and 4: the signed size catches it
    "batch_size larger": (lambda p: setattr(p, "batch_size", 4), "proven.signature does not"),
    "batch_size zero": (lambda p: setattr(p, "batch_size", 0), "not 0"),
    "batch_size too big": (lambda p: setattr(p, "batch_size", MAX_BATCH + 1), "not 1025"),
    "proof flipped": (
        lambda p: p.proof.__setitem__(0, flip(p.proof[0], 0)),
        "not included in the batch root",
    ),
    "proof dropped": (lambda p: p.proof.pop(), "not included"),
    "proof extended": (lambda p: p.proof.append(bytes(32)), "not included"),
    "root flipped": (lambda p: setattr(p, "batch_root", flip(p.batch_root, 0)), "not included"),
    "root short": (lambda p: setattr(p, "batch_root", b"x"), "batch_root must be 32 bytes"),
    "signature flipped": (
        lambda p: setattr(p, "signature", flip(p.signature, 63)),
        "proven.signature does not verify",
    ),
    "signer changed": (
        lambda p: setattr(p, "signer", "EUROPOL"),
        r"proven.receipt.recipient 'DE-BKA' is not the signer 'EUROPOL'",
    ),
    "signer empty": (lambda p: p.ClearField("signer"), "proven.signer is empty"),
}


@pytest.mark.parametrize("name", sorted(PROVEN_CASES))
def test_tampered_proven_receipt_fails(name: str) -> None:
    edit, message = PROVEN_CASES[name]
    proven = notice_pb2.ProvenReceipt()
    proven.CopyFrom(PROVEN)
    edit(proven)
    assert proven != PROVEN
    with pytest.raises(ReceiptError, match=message):
        verify_proven_receipt(proven, PUBLIC)


def test_proven_receipt_wrong_key() -> None:
    with pytest.raises(ReceiptError, match=r"proven\.signature does not verify"):
        verify_proven_receipt(PROVEN, OTHER_PUBLIC)
