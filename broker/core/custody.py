"""Chains of custody (pure): sign a custody record, check one link, verify a whole chain.

Every agency that seals, receives, opens or forwards an attachment signs a CustodyRecord
over the attachment's evidence digest (its signed ``chunks_root``) and the notice's header
digest: Ed25519(RECORD_CONTEXT || record bytes). Records form a hash-linked sequence:
record ``seq`` carries ``previous_digest`` = :func:`record_digest` of record seq-1, and
record 0 carries :func:`genesis` of the attachment. The broker stores each link it
accepts and logs a CustodyRecorded leaf; an auditor re-verifies every signature and link,
so a broker that drops, reorders, replaces or forges a link is caught
(:func:`verify_chain`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from broker.core import envelope_suite as es
from broker.v1 import audit_pb2, evidence_pb2

RECORD_CONTEXT = b"broker.v1 custody record\x00"
DIGEST_CONTEXT = b"broker.v1 custody digest\x00"
GENESIS_CONTEXT = b"broker.v1 custody genesis\x00"
MAX_NOTE_CHARS = 200
ACTIONS = {
    evidence_pb2.CUSTODY_SEALED: "sealed",
    evidence_pb2.CUSTODY_RECEIVED: "received",
    evidence_pb2.CUSTODY_OPENED: "opened",
    evidence_pb2.CUSTODY_FORWARDED: "forwarded",
}
ACTION_VALUES = {name: value for value, name in ACTIONS.items()}


class CustodyError(ValueError):
    """A custody record or chain that does not verify; the text says which link and why."""


def genesis(notice_id: str, version: int, section: str, evidence_digest: bytes) -> bytes:
    """The previous_digest of link 0: SHA-256 over the context and the attachment's name."""
    h = hashlib.sha256(GENESIS_CONTEXT)
    for text in (notice_id, section):
        raw = text.encode()
        h.update(struct.pack(">H", len(raw)) + raw)
    h.update(struct.pack(">I", version) + evidence_digest)
    return h.digest()


def record_digest(record_bytes: bytes) -> bytes:
    """SHA-256(DIGEST_CONTEXT || record bytes): what the next link points to."""
    return hashlib.sha256(DIGEST_CONTEXT + record_bytes).digest()


def sign_record(
    record: evidence_pb2.CustodyRecord, signing_seed: bytes
) -> evidence_pb2.SignedCustody:
    """Serialize ``record`` deterministically and sign it with the agency's Ed25519 seed."""
    data = es.serialize(record)
    return evidence_pb2.SignedCustody(
        record=data, signature=es.ed25519_sign(signing_seed, RECORD_CONTEXT + data)
    )


def parse_record(signed: evidence_pb2.SignedCustody) -> evidence_pb2.CustodyRecord:
    """The record inside; CustodyError if its bytes are not a CustodyRecord."""
    try:
        return es.parse(evidence_pb2.CustodyRecord, signed.record)
    except DecodeError:
        raise CustodyError("custody record is not a valid broker.v1.CustodyRecord") from None


def signature_valid(signed: evidence_pb2.SignedCustody, public_key: bytes) -> bool:
    return es.ed25519_valid(public_key, signed.signature, RECORD_CONTEXT + signed.record)


@dataclass(frozen=True)
class Expected:
    """What every link of one attachment's chain must name."""

    notice_id: str
    version: int
    section: str
    evidence_digest: bytes
    header_digest: bytes


def check_link(
    signed: evidence_pb2.SignedCustody,
    expected: Expected,
    seq: int,
    previous: bytes,
    public_key: Callable[[str], bytes | None],
) -> evidence_pb2.CustodyRecord:
    """Check one link: it names the attachment, sits at ``seq`` after ``previous`` (a
    record digest, or the genesis), and its agency's key signed it. Returns the record;
    raises CustodyError saying what is wrong."""
    r = parse_record(signed)
    where = f"custody link {seq}"
    if (r.notice_id, r.version, r.section) != (
        expected.notice_id,
        expected.version,
        expected.section,
    ):
        raise CustodyError(f"{where} names another attachment")
    if r.evidence_digest != expected.evidence_digest:
        raise CustodyError(f"{where} is over another evidence digest")
    if r.header_digest != expected.header_digest:
        raise CustodyError(f"{where} is over another notice header")
    if r.seq != seq:
        raise CustodyError(f"{where} says it is link {r.seq}: a link is missing or out of order")
    if r.previous_digest != previous:
        raise CustodyError(
            f"{where} does not follow link {seq - 1}: the chain was cut or reordered"
        )
    if r.action not in ACTIONS:
        raise CustodyError(f"{where} has no known action")
    if len(r.note) > MAX_NOTE_CHARS:
        raise CustodyError(f"{where}: note is longer than {MAX_NOTE_CHARS} characters")
    key = public_key(r.agency)
    if key is None:
        raise CustodyError(f"{where} is by {r.agency!r}, whose signing key is unknown")
    if not signature_valid(signed, key):
        raise CustodyError(f"{where} is not signed by {r.agency}: forged or altered")
    return r


def verify_chain(
    chain: Sequence[evidence_pb2.SignedCustody],
    expected: Expected,
    public_key: Callable[[str], bytes | None],
    originator: str,
) -> list[evidence_pb2.CustodyRecord]:
    """Verify a whole chain: link 0 is the originator sealing it, every link follows the
    one before. Returns the records; raises CustodyError at the first bad link."""
    if not chain:
        raise CustodyError("the chain of custody is empty: not even the originator's link")
    previous = genesis(
        expected.notice_id, expected.version, expected.section, expected.evidence_digest
    )
    records: list[evidence_pb2.CustodyRecord] = []
    for seq, signed in enumerate(chain):
        r = check_link(signed, expected, seq, previous, public_key)
        if seq == 0 and (r.action != evidence_pb2.CUSTODY_SEALED or r.agency != originator):
            raise CustodyError("custody link 0 is not the originator sealing the evidence")
        records.append(r)
        previous = record_digest(signed.record)
    return records


def custody_leaf(
    r: evidence_pb2.CustodyRecord, originator: str, record_bytes: bytes, logged_at_ms: int
) -> audit_pb2.LogLeaf:
    """The CustodyRecorded leaf of an accepted link."""
    return audit_pb2.LogLeaf(
        format=1,
        logged_at_ms=logged_at_ms,
        custody=evidence_pb2.CustodyRecorded(
            notice_id=r.notice_id,
            version=r.version,
            section=r.section,
            originator=originator,
            agency=r.agency,
            seq=r.seq,
            action=ACTIONS.get(r.action, "unknown"),
            record_digest=record_digest(record_bytes),
            previous_digest=r.previous_digest,
        ),
    )
