"""Proof-of-delivery bundles, verified offline (pure).

A :class:`broker.v1.audit_pb2.ProofOfDelivery` holds a signed checkpoint, the
notice's NoticePublished and PolicyDecision leaves, each receipt (the
recipient's signed batch proof, its CA-signed key statement, and its
DeliveryReceipt leaf) and the notice's other leaves (withholdings, lifecycle
events), every leaf with its inclusion proof at the checkpoint's size.

:func:`verify_pod` needs only the deployment CA's public key and the broker's
log verifier key (plus witness keys when cosignatures are required): it
checks the checkpoint signature, every inclusion proof, every receipt
signature against a key the CA bound to the recipient, and that each logged
leaf says what the signed receipt says. A key statement is checked at the
time its receipt was logged (the leaf's logged_at_ms), so a bundle still
verifies after the recipient's certificate expired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker.core import auditing, logleaf
from broker.core import receipts as rcp
from broker.core.checkpoint import Checkpoint, Verifier
from broker.core.identity import IdentityError, verify_key_statement
from broker.core.merkle import ProofError, leaf_hash, verify_inclusion
from broker.core.pqnote import PQVerifier
from broker.errors import InvalidArgument
from broker.v1 import audit_pb2

POD_FORMAT = 1


class PodError(InvalidArgument):
    """A proof-of-delivery bundle that does not verify; the message says which part."""


@dataclass(frozen=True)
class VerifiedReceipt:
    recipient: str
    sections: tuple[str, ...]
    received_at_ms: int
    log_index: int


@dataclass(frozen=True)
class PodReport:
    notice_id: str
    version: int
    originator: str
    kind: str
    header_digest: bytes
    policy_version: str
    checkpoint: Checkpoint
    cosigners: tuple[str, ...]
    planned: tuple[tuple[str, tuple[str, ...]], ...]
    receipts: tuple[VerifiedReceipt, ...]
    events: tuple[str, ...]  # descriptions of withholdings and lifecycle events

    @property
    def pending(self) -> tuple[str, ...]:
        """Planned recipients without a receipt in the bundle."""
        done = {r.recipient for r in self.receipts}
        return tuple(r for r, _ in self.planned if r not in done)


def _proven(entry: audit_pb2.ProvenEntry, cp: Checkpoint, what: str) -> audit_pb2.LogLeaf:
    index = entry.entry.index
    try:
        verify_inclusion(index, cp.size, leaf_hash(entry.entry.leaf), entry.proof, cp.root)
    except ProofError as exc:
        raise PodError(
            f"{what} (log entry {index}) is not in the log of checkpoint {cp.size}: {exc}"
        ) from None
    try:
        return logleaf.parse(entry.entry.leaf)
    except logleaf.LeafError as exc:
        raise PodError(f"{what} (log entry {index}): {exc}") from None


def _same_notice(leaf_notice: tuple[str, int], pod: audit_pb2.ProofOfDelivery, what: str) -> None:
    if leaf_notice != (pod.notice_id, pod.version):
        raise PodError(
            f"{what} is about notice {leaf_notice[0]} v{leaf_notice[1]}, "
            f"not {pod.notice_id} v{pod.version}"
        )


def verify_pod(
    pod: audit_pb2.ProofOfDelivery,
    ca_public_key: EllipticCurvePublicKey,
    log_verifier: Verifier,
    *,
    origin: str | None = None,
    witnesses: Sequence[Verifier] = (),
    min_cosignatures: int = 0,
    pq_verifier: PQVerifier | None = None,
) -> PodReport:
    """Verify a proof-of-delivery bundle offline; return what it proves.

    Raises PodError naming the first part that does not verify (or
    CheckpointError for the checkpoint itself; with `pq_verifier`, the hybrid log
    key's ML-DSA-65 half, its line must verify too).
    """
    if pod.format != POD_FORMAT:
        raise PodError(f"proof of delivery has format {pod.format}; expected {POD_FORMAT}")
    verified = auditing.open_log_checkpoint(
        pod.checkpoint.note,
        log_verifier,
        origin=origin,
        witnesses=witnesses,
        min_cosignatures=min_cosignatures,
        pq_verifier=pq_verifier,
    )
    cp = verified.checkpoint

    leaf = _proven(pod.notice, cp, "the notice entry")
    if logleaf.kind_of(leaf) != logleaf.NOTICE:
        raise PodError("the notice entry is not a NoticePublished leaf")
    notice = leaf.notice
    _same_notice((notice.notice_id, notice.version), pod, "the notice entry")

    leaf = _proven(pod.decision, cp, "the decision entry")
    if logleaf.kind_of(leaf) != logleaf.DECISION:
        raise PodError("the decision entry is not a PolicyDecision leaf")
    decision = leaf.decision
    _same_notice((decision.notice_id, decision.version), pod, "the decision entry")
    if decision.originator != notice.originator:
        raise PodError("the decision entry names another originator than the notice entry")
    planned = {p.recipient: tuple(p.sections) for p in decision.planned}

    receipts: list[VerifiedReceipt] = []
    for i, ev in enumerate(pod.receipts):
        what = f"receipt {i} ({ev.receipt.signer or 'unsigned'})"
        logged = _proven(ev.logged, cp, f"the log entry of {what}")
        if logleaf.kind_of(logged) != logleaf.RECEIPT:
            raise PodError(f"the log entry of {what} is not a DeliveryReceipt leaf")
        entry = logged.receipt
        try:
            keys = verify_key_statement(
                ev.key_statement,
                ca_public_key,
                logged.logged_at_ms,
                expected_agency=ev.receipt.signer,
            )
            receipt = rcp.verify_proven_receipt(ev.receipt, keys.verify_key)
        except (IdentityError, rcp.ReceiptError) as exc:
            raise PodError(f"{what}: {exc}") from None
        _same_notice((receipt.notice_id, receipt.version), pod, what)
        if receipt.header_digest != notice.header_digest:
            raise PodError(f"{what} acknowledges another header than the one published")
        expected = (
            receipt.notice_id,
            receipt.version,
            receipt.recipient,
            bytes(receipt.header_digest),
            tuple(receipt.sections),
            logleaf.receipt_digest(ev.receipt.receipt),
            notice.originator,
        )
        actual = (
            entry.notice_id,
            entry.version,
            entry.recipient,
            bytes(entry.header_digest),
            tuple(entry.sections),
            bytes(entry.receipt_digest),
            entry.originator,
        )
        if expected != actual:
            raise PodError(f"the log entry of {what} does not record that signed receipt")
        if receipt.recipient not in planned:
            raise PodError(f"{what} is from {receipt.recipient}, to whom no delivery was planned")
        if any(r.recipient == receipt.recipient for r in receipts):
            raise PodError(f"{what}: a second receipt from {receipt.recipient}")
        receipts.append(
            VerifiedReceipt(
                receipt.recipient,
                tuple(receipt.sections),
                receipt.received_at_ms,
                ev.logged.entry.index,
            )
        )

    events = []
    for i, event in enumerate(pod.events):
        leaf = _proven(event, cp, f"event {i}")
        index = logleaf.index_of(leaf)
        _same_notice((index.notice_id, index.version), pod, f"event {i}")
        events.append(logleaf.describe(leaf))

    return PodReport(
        notice_id=notice.notice_id,
        version=notice.version,
        originator=notice.originator,
        kind=notice.kind,
        header_digest=bytes(notice.header_digest),
        policy_version=decision.policy_version,
        checkpoint=cp,
        cosigners=verified.cosigners,
        planned=tuple(sorted(planned.items())),
        receipts=tuple(sorted(receipts, key=lambda r: r.recipient)),
        events=tuple(events),
    )
