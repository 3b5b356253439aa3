"""The leaves of what happens besides publication (pure): policy activations,
registry changes, restriction updates, lifecycle events, revocations,
forwarding-time re-checks and (+ judicial) request steps.

Each builder takes the facts as keyword arguments and returns one leaf; what was
signed enters as its SHA-256 (a statement also as its claimed serial), never as
itself, except a forwarding decision's record, which replay re-evaluates. Part of
:mod:`broker.core.logleaf`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from google.protobuf.message import DecodeError

from broker.core.logleaf.codec import _leaf
from broker.v1 import audit_pb2, notice_pb2, requests_pb2


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
