"""The leaves of a notice's publication and delivery (pure): published, decision,
withholdings, receipts.

:func:`publication` builds every leaf a newly stored notice gets, in order: the
NoticePublished (digests and times), the PolicyDecision (the decision record's
digest and the planned deliveries, sorted), then one SectionsWithheld per
addressed recipient and cause (DENIED_BY_POLICY, with the rules, or NOT_SEALED).
A verified receipt becomes a DeliveryReceipt (:func:`delivery_receipt`). Part of
:mod:`broker.core.logleaf`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.message import DecodeError

from broker.core.logleaf.codec import LeafError, _leaf
from broker.v1 import audit_pb2, notice_pb2

DENIED_BY_POLICY = "denied by the policy"
NOT_SEALED = "not sealed for it by the originator"


def decisions_digest(record: str) -> bytes:
    """SHA-256 of a decision record JSON as stored (UTF-8)."""
    return hashlib.sha256(record.encode("utf-8")).digest()


def notice_published(
    *,
    notice_id: str,
    version: int,
    originator: str,
    kind: str,
    header_digest: bytes,
    envelope_digest: bytes,
    created_at_ms: int,
    expires_at_ms: int,
    accepted_at_ms: int,
    logged_at_ms: int,
) -> audit_pb2.LogLeaf:
    return _leaf(
        logged_at_ms,
        notice=audit_pb2.NoticePublished(
            notice_id=notice_id,
            version=version,
            originator=originator,
            kind=kind,
            header_digest=header_digest,
            envelope_digest=envelope_digest,
            created_at_ms=created_at_ms,
            expires_at_ms=expires_at_ms,
            accepted_at_ms=accepted_at_ms,
        ),
    )


Plan = tuple[str, Sequence[str]]  # (recipient, sections sealed for it)


def _planned(planned: Iterable[Plan]) -> list[audit_pb2.PlannedDelivery]:
    return [
        audit_pb2.PlannedDelivery(recipient=r, sections=sorted(s))
        for r, s in sorted(planned, key=lambda p: p[0])
    ]


def policy_decision(
    *,
    notice_id: str,
    version: int,
    originator: str,
    policy_version: str,
    decision_record: str,
    planned: Iterable[Plan],
    logged_at_ms: int,
) -> audit_pb2.LogLeaf:
    return _leaf(
        logged_at_ms,
        decision=audit_pb2.PolicyDecision(
            notice_id=notice_id,
            version=version,
            originator=originator,
            policy_version=policy_version,
            decisions_digest=decisions_digest(decision_record),
            planned=_planned(planned),
        ),
    )


def _record_sections(
    record: Any,
) -> tuple[list[str], dict[tuple[str, str], tuple[bool, list[str]]]]:
    """(notice sections, {(recipient, section): (allowed, rules)}) from a decision record."""
    decided: dict[tuple[str, str], tuple[bool, list[str]]] = {}
    sections: list[str] = []
    if isinstance(record, dict):
        notice = record.get("notice")
        if isinstance(notice, dict) and isinstance(notice.get("sections"), list):
            sections = [str(s) for s in notice["sections"]]
        for d in record.get("decisions") or []:
            if isinstance(d, dict):
                key = (str(d.get("recipient", "")), str(d.get("section", "")))
                decided[key] = (bool(d.get("allowed")), [str(r) for r in d.get("rules") or []])
    return sections, decided


Refused = tuple[str, str, tuple[str, ...]]  # (recipient, section, rules) the policy denied


def withholdings(
    *,
    notice_id: str,
    version: int,
    originator: str,
    policy_version: str,
    decision_record: str,
    planned: Iterable[Plan],
    logged_at_ms: int,
    sections: Sequence[str] = (),
    refused: Iterable[Refused] = (),
) -> list[audit_pb2.LogLeaf]:
    """One leaf per (addressed recipient, cause) for sections of the notice it does not get.

    Cause: the policy denied them (with the rules), or the originator did not
    seal them for it. Recipients the originator did not address are not known
    at publication and get no leaf. The notice's `sections` and what the policy
    `refused` the addressed recipients may be given (the relay knows them); else
    they are read from the decision record.
    """
    if sections:
        decided = {(r, s): (False, list(rules)) for r, s, rules in refused}
        sections = list(sections)
    else:
        try:
            record = json.loads(decision_record)
        except ValueError:
            record = None
        sections, decided = _record_sections(record)
    out = []
    for recipient, sealed in sorted(planned, key=lambda p: p[0]):
        known = set(sections) or {s for r, s in decided if r == recipient}
        missing = sorted(known - set(sealed))
        denied = [s for s in missing if not decided.get((recipient, s), (True, []))[0]]
        unsealed = [s for s in missing if s not in denied]
        rules = list(dict.fromkeys(r for s in denied for r in decided[(recipient, s)][1]))
        for names, reason, why in ((denied, DENIED_BY_POLICY, rules), (unsealed, NOT_SEALED, [])):
            if names:
                out.append(
                    _leaf(
                        logged_at_ms,
                        withheld=audit_pb2.SectionsWithheld(
                            notice_id=notice_id,
                            version=version,
                            originator=originator,
                            recipient=recipient,
                            sections=names,
                            reason=reason,
                            rules=why,
                            policy_version=policy_version,
                        ),
                    )
                )
    return out


def publication(
    *,
    notice_id: str,
    version: int,
    originator: str,
    kind: str,
    header_digest: bytes,
    envelope_digest: bytes,
    created_at_ms: int,
    expires_at_ms: int,
    accepted_at_ms: int,
    policy_version: str,
    decision_record: str,
    planned: Sequence[Plan],
    logged_at_ms: int,
    sections: Sequence[str] = (),
    refused: Iterable[Refused] = (),
) -> list[audit_pb2.LogLeaf]:
    """Every leaf a newly stored notice gets: published, decision, then withholdings."""
    return [
        notice_published(
            notice_id=notice_id,
            version=version,
            originator=originator,
            kind=kind,
            header_digest=header_digest,
            envelope_digest=envelope_digest,
            created_at_ms=created_at_ms,
            expires_at_ms=expires_at_ms,
            accepted_at_ms=accepted_at_ms,
            logged_at_ms=logged_at_ms,
        ),
        policy_decision(
            notice_id=notice_id,
            version=version,
            originator=originator,
            policy_version=policy_version,
            decision_record=decision_record,
            planned=planned,
            logged_at_ms=logged_at_ms,
        ),
        *withholdings(
            notice_id=notice_id,
            version=version,
            originator=originator,
            policy_version=policy_version,
            decision_record=decision_record,
            planned=planned,
            logged_at_ms=logged_at_ms,
            sections=sections,
            refused=refused,
        ),
    ]


def receipt_digest(receipt: bytes) -> bytes:
    """SHA-256 of the signed Receipt bytes."""
    return hashlib.sha256(receipt).digest()


def receipt_leaf(
    *,
    notice_id: str,
    version: int,
    originator: str,
    recipient: str,
    header_digest: bytes,
    sections: Sequence[str],
    received_at_ms: int,
    receipt_digest: bytes,
    batch_root: bytes,
    logged_at_ms: int,
) -> audit_pb2.LogLeaf:
    """The leaf of a verified receipt, from what it says."""
    return _leaf(
        logged_at_ms,
        receipt=audit_pb2.DeliveryReceipt(
            notice_id=notice_id,
            version=version,
            originator=originator,
            recipient=recipient,
            header_digest=header_digest,
            sections=list(sections),
            received_at_ms=received_at_ms,
            receipt_digest=receipt_digest,
            batch_root=batch_root,
        ),
    )


def delivery_receipt(
    proven: notice_pb2.ProvenReceipt, originator: str, logged_at_ms: int
) -> audit_pb2.LogLeaf:
    """The leaf of a verified receipt. Raises LeafError if its bytes are not a Receipt."""
    receipt = notice_pb2.Receipt()
    try:
        receipt.ParseFromString(proven.receipt)
    except DecodeError:
        raise LeafError("proven receipt does not hold a Receipt") from None
    return receipt_leaf(
        notice_id=receipt.notice_id,
        version=receipt.version,
        originator=originator,
        recipient=receipt.recipient,
        header_digest=receipt.header_digest,
        sections=receipt.sections,
        received_at_ms=receipt.received_at_ms,
        receipt_digest=receipt_digest(proven.receipt),
        batch_root=proven.batch_root,
        logged_at_ms=logged_at_ms,
    )
