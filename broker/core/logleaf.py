"""Transparency-log leaves (pure): build them, serialize them, parse them back.

A leaf is a :class:`broker.v1.audit_pb2.LogLeaf` with one typed entry; its
bytes in the log are the deterministic serialization, and what a proof
covers is ``merkle.leaf_hash(bytes)``. Verifiers hash the bytes they were
given, then :func:`parse` them.

Leaves hold digests, ids, catalogue names and times, never personal data:
the notice's header digest, not its header; the SHA-256 of the decision
record, not the record (the broker keeps it, and serves it to auditors, who
check it against the digest).

:func:`index_of` says whom a leaf is about, which is what AuditService's
authorization reads: ``originator`` (the agency whose notice it is) and
``reader`` (a recipient who may also see it: its own receipts and delivery
events, never what was withheld from it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from broker.errors import InvalidArgument
from broker.v1 import audit_pb2, notice_pb2, requests_pb2

LEAF_FORMAT = 1

NOTICE = "notice"
DECISION = "decision"
RECEIPT = "receipt"
WITHHELD = "withheld"
POLICY_ACTIVATED = "policy_activated"
REGISTRY_CHANGE = "registry_change"
LIFECYCLE = "lifecycle"
FORWARDED = "forwarded"  # the forwarding-time re-check (ForwardingDecision)
RESTRICTIONS = "restrictions"  # an originator's restriction update (RestrictionsUpdated)
LOOKUP = "lookup"  # + lookups: LookupPerformed (broker/core/lookup.py builds it)
REQUEST_STEP = "request_step"  # + judicial: RequestStepLogged (request_step below)
KINDS = (
    NOTICE,
    DECISION,
    RECEIPT,
    WITHHELD,
    POLICY_ACTIVATED,
    REGISTRY_CHANGE,
    LIFECYCLE,
    LOOKUP,
    REQUEST_STEP,
)
CUSTODY = "custody"  # + evidence: CustodyRecorded (broker/core/custody.py builds it)

DENIED_BY_POLICY = "denied by the policy"
NOT_SEALED = "not sealed for it by the originator"
# Lifecycle kinds the recipient of the delivery may see (its own delivery's fate).
RECIPIENT_VISIBLE_LIFECYCLE = frozenset({"dead_lettered"})


class LeafError(InvalidArgument):
    """Bytes that are not a well-formed LogLeaf of a known format."""


@dataclass(frozen=True)
class LeafIndex:
    """Whom a leaf is about: what the store indexes and authorization reads."""

    kind: str
    notice_id: str = ""
    version: int = 0
    originator: str = ""
    reader: str = ""  # a recipient who may see this leaf too ("" for none)


def serialize(leaf: audit_pb2.LogLeaf) -> bytes:
    """Return the leaf's bytes in the log: its deterministic serialization."""
    return leaf.SerializeToString(deterministic=True)


def parse(data: bytes) -> audit_pb2.LogLeaf:
    """Parse leaf bytes; raise LeafError unless they hold a format-1 leaf with an entry."""
    leaf = audit_pb2.LogLeaf()
    try:
        leaf.ParseFromString(data)
    except DecodeError:
        raise LeafError("log leaf is not a valid broker.v1.LogLeaf") from None
    if leaf.format != LEAF_FORMAT:
        raise LeafError(f"log leaf has format {leaf.format}; this broker reads {LEAF_FORMAT}")
    if leaf.WhichOneof("entry") is None:
        raise LeafError("log leaf carries no entry")
    return leaf


def kind_of(leaf: audit_pb2.LogLeaf) -> str:
    kind = leaf.WhichOneof("entry")
    if kind is None:
        raise LeafError("log leaf carries no entry")
    return kind


def index_of(leaf: audit_pb2.LogLeaf) -> LeafIndex:
    """Return whom `leaf` is about (see the module docstring)."""
    kind = kind_of(leaf)
    if kind == NOTICE:
        n = leaf.notice
        return LeafIndex(kind, n.notice_id, n.version, n.originator)
    if kind == DECISION:
        d = leaf.decision
        return LeafIndex(kind, d.notice_id, d.version, d.originator)
    if kind == RECEIPT:
        r = leaf.receipt
        return LeafIndex(kind, r.notice_id, r.version, r.originator, r.recipient)
    if kind == WITHHELD:
        w = leaf.withheld
        return LeafIndex(kind, w.notice_id, w.version, w.originator)
    if kind == LIFECYCLE:
        e = leaf.lifecycle
        reader = e.recipient if e.kind in RECIPIENT_VISIBLE_LIFECYCLE else ""
        return LeafIndex(kind, e.notice_id, e.version, e.originator, reader)
    if kind == RESTRICTIONS:  # the originator's own change
        u = leaf.restrictions
        return LeafIndex(kind, u.notice_id, 0, u.originator)
    if kind == FORWARDED:
        f = leaf.forwarded
        return LeafIndex(kind, f.notice_id, f.version, f.originator, f.recipient)
    if kind == LOOKUP:  # the querier sees its lookups; the originator of the first hit too
        q = leaf.lookup
        first = (q.hit_notices[0], q.hit_originators[0]) if q.hit_notices else ("", "")
        return LeafIndex(kind, first[0], 0, first[1], q.querier)
    if kind == REQUEST_STEP:  # + judicial: both parties see every step of their request
        st = leaf.request_step
        return LeafIndex(kind, st.notice_id, 0, st.issuer, st.executor)
    if kind == CUSTODY:  # + evidence: the originator's notice; the agency that acted sees it
        c = leaf.custody
        return LeafIndex(kind, c.notice_id, c.version, c.originator, c.agency)
    return LeafIndex(kind)  # policy and registry: auditors only


def decisions_digest(record: str) -> bytes:
    """SHA-256 of a decision record JSON as stored (UTF-8)."""
    return hashlib.sha256(record.encode("utf-8")).digest()


def _leaf(logged_at_ms: int, **entry: Any) -> audit_pb2.LogLeaf:
    return audit_pb2.LogLeaf(format=LEAF_FORMAT, logged_at_ms=logged_at_ms, **entry)


# --------------------------------------------------------------------- builders


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


def policy_activated(
    *,
    version: str,
    activated_by: str,
    activated_at_ms: int,
    reason: str,
    sequence: int,
    signed_activation: bytes | None,
    logged_at_ms: int,
) -> audit_pb2.LogLeaf:
    return _leaf(
        logged_at_ms,
        policy_activated=audit_pb2.PolicyActivated(
            version=version,
            activated_by=activated_by,
            activated_at_ms=activated_at_ms,
            reason=reason,
            sequence=sequence,
            signed_activation_digest=(
                hashlib.sha256(signed_activation).digest() if signed_activation else b""
            ),
        ),
    )


def statement_serial(statement: bytes) -> int:
    """The serial a SignedKeyStatement claims (unverified; 0 if unreadable)."""
    try:
        signed = notice_pb2.SignedKeyStatement.FromString(statement)
        return int(notice_pb2.KeyStatement.FromString(signed.statement).serial)
    except DecodeError:
        return 0


def registry_change(
    *,
    agency_id: str,
    change: str,
    country: str,
    roles: Iterable[str],
    groups: Iterable[str],
    purposes: Iterable[str],
    status: str,
    statement: bytes,
    actor: str,
    logged_at_ms: int,
    signed_entry: bytes = b"",
    directory_value: bytes = b"",
) -> audit_pb2.LogLeaf:
    return _leaf(
        logged_at_ms,
        registry_change=audit_pb2.RegistryChange(
            agency_id=agency_id,
            change=change,
            country=country,
            roles=sorted(roles),
            groups=sorted(groups),
            purposes=sorted(purposes),
            status=status,
            statement_digest=hashlib.sha256(statement).digest() if statement else b"",
            statement_serial=statement_serial(statement) if statement else 0,
            actor=actor,
            signed_entry=signed_entry,
            directory_value=directory_value,
        ),
    )


def restrictions_updated(
    *,
    notice_id: str,
    originator: str,
    sequence: int,
    update: bytes,
    excluded: Sequence[str],
    withheld: int,
    logged_at_ms: int,
) -> audit_pb2.LogLeaf:
    """The originator changed a published notice's restrictions (its signed update's digest,
    the holders it excludes, the queued deliveries it withheld)."""
    return _leaf(
        logged_at_ms,
        restrictions=audit_pb2.RestrictionsUpdated(
            notice_id=notice_id,
            originator=originator,
            sequence=sequence,
            update_digest=hashlib.sha256(update).digest(),
            excluded=list(excluded),
            withheld=withheld,
        ),
    )


def lifecycle(
    *,
    kind: str,
    notice_id: str,
    version: int,
    originator: str,
    recipient: str,
    detail: str,
    logged_at_ms: int,
) -> audit_pb2.LogLeaf:
    return _leaf(
        logged_at_ms,
        lifecycle=audit_pb2.LifecycleEvent(
            kind=kind,
            notice_id=notice_id,
            version=version,
            originator=originator,
            recipient=recipient,
            detail=detail,
        ),
    )


# ---------------------------------------------------------------------- output


def describe(leaf: audit_pb2.LogLeaf) -> str:
    """One line a person can read."""
    kind = kind_of(leaf)
    if kind == NOTICE:
        n = leaf.notice
        return f"notice {n.notice_id} v{n.version} ({n.kind}) published by {n.originator}"
    if kind == DECISION:
        d = leaf.decision
        plan = "; ".join(f"{p.recipient}: {', '.join(p.sections)}" for p in d.planned)
        return (
            f"decision {d.notice_id} v{d.version} under policy {d.policy_version[:12]}: "
            f"{plan or 'nobody'}"
        )
    if kind == RECEIPT:
        r = leaf.receipt
        return f"receipt {r.notice_id} v{r.version} from {r.recipient}: {', '.join(r.sections)}"
    if kind == WITHHELD:
        w = leaf.withheld
        rules = f" [{', '.join(w.rules)}]" if w.rules else ""
        return (
            f"withheld {w.notice_id} v{w.version} from {w.recipient}: "
            f"{', '.join(w.sections)} ({w.reason}){rules}"
        )
    if kind == POLICY_ACTIVATED:
        p = leaf.policy_activated
        return f"policy {p.version[:12]} activated by {p.activated_by}: {p.reason}"
    if kind == REGISTRY_CHANGE:
        g = leaf.registry_change
        return (
            f"registry {g.agency_id} {g.change} by {g.actor} "
            f"({g.country}, {g.status}, statement serial {g.statement_serial})"
        )
    if kind == LOOKUP:
        q = leaf.lookup
        hits = len(set(q.hit_indexes))
        where = f" ({', '.join(sorted(set(q.hit_notices)))})" if q.hit_notices else ""
        return (
            f"lookup by {q.querier} for {q.purpose}: {len(q.token_digests)} token(s), "
            f"{hits} hit(s){where}"
        )
    if kind == REQUEST_STEP:
        st = leaf.request_step
        grounds = f" on {', '.join(st.grounds)}" if st.grounds else ""
        due = f"; {st.deadline} due at {st.deadline_ms}" if st.deadline else ""
        return (
            f"request {st.notice_id} ({st.kind}): {st.step} by {st.actor} at "
            f"{st.signed_at_ms}{grounds} -> {st.state}{due}"
        )
    if kind == CUSTODY:
        c = leaf.custody
        return f"custody {c.notice_id} v{c.version} {c.section} #{c.seq}: {c.action} by {c.agency}"
    e = leaf.lifecycle
    return f"{e.kind} {e.notice_id} v{e.version} to {e.recipient}: {e.detail}"


def to_json(leaf: audit_pb2.LogLeaf) -> dict[str, Any]:
    """The leaf as JSON-ready values (bytes as base64, proto3 JSON mapping)."""
    value: dict[str, Any] = json_format.MessageToDict(leaf, preserving_proto_field_name=True)
    return value


def party_revoked(
    *, party: str, by: str, signed: bytes, withheld: int, logged_at_ms: int
) -> audit_pb2.LogLeaf:
    """A party was revoked on a running broker: by the CA's list ("ca") or by an
    administrator's signed registry entry (its digest), with the deliveries withheld."""
    return _leaf(
        logged_at_ms,
        revoked=audit_pb2.PartyRevoked(
            party=party,
            by=by,
            signed_digest=hashlib.sha256(signed).digest() if signed else b"",
            withheld=withheld,
        ),
    )


def forwarding_decision(
    *,
    notice_id: str,
    version: int,
    originator: str,
    recipient: str,
    sections: Sequence[str],
    outcome: str,
    policy_version: str,
    registry_key: str,
    restrictions: bytes,
    record: bytes,
    logged_at_ms: int,
) -> audit_pb2.LogLeaf:
    """A queued delivery re-checked when due (something changed since publish): allowed
    or withheld, with the record of the facts and profile it was decided on, which
    replay re-evaluates (broker/core/replay.py)."""
    return _leaf(
        logged_at_ms,
        forwarded=audit_pb2.ForwardingDecision(
            notice_id=notice_id,
            version=version,
            originator=originator,
            recipient=recipient,
            sections=sorted(sections),
            outcome=outcome,
            policy_version=policy_version,
            registry_key=registry_key,
            restrictions_digest=hashlib.sha256(restrictions).digest() if restrictions else b"",
            rechecked=True,
            record_digest=hashlib.sha256(record).digest(),
            record=record,
        ),
    )


# -- + judicial: request steps ------------------------------------------------------------


def request_step(
    *,
    notice_id: str,
    kind: str,
    step: str,
    actor: str,
    issuer: str,
    executor: str,
    state: str,
    signed_at_ms: int,
    action: bytes,
    deadline: str,
    deadline_ms: int,
    grounds: Sequence[str],
    priority: int,
    logged_at_ms: int,
) -> audit_pb2.LogLeaf:
    """The leaf of one request step: who acted when (their signed time), the digest of
    what they signed, the state it led to and the time limit then running."""
    return _leaf(
        logged_at_ms,
        request_step=requests_pb2.RequestStepLogged(
            notice_id=notice_id,
            kind=kind,
            step=step,
            actor=actor,
            issuer=issuer,
            executor=executor,
            state=state,
            signed_at_ms=signed_at_ms,
            action_digest=hashlib.sha256(action).digest(),
            deadline=deadline,
            deadline_ms=deadline_ms,
            grounds=list(grounds),
            priority=priority,  # type: ignore[arg-type]
        ),
    )
