"""Signed administrator actions, in two steps: prepare, then confirm.

Preparing builds the exact bytes the administrator will sign (a
PolicyActivation, or the next revision of an AgencyEntry) and keeps them under
a random id; the confirmation page shows every field and the SHA-256 of the
signed message. Only a POST of that confirmation (with the CSRF token) signs,
with the administrator's own CA-certified key, and sends. An action is confirmed
at most once and expires unconfirmed after :data:`TTL_MS`; nothing is signed or
sent before confirmation.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from broker.console.sources import Sources
from broker.core import activation as act
from broker.errors import FailedPrecondition, InvalidArgument, NotFound
from broker.v1 import admin_pb2

TTL_MS = 10 * 60 * 1000
ACTIVATE = "activate"
ROLLBACK = "rollback"
STATUS = "status"


@dataclass(frozen=True)
class Pending:
    id: str
    kind: str  # ACTIVATE, ROLLBACK or STATUS
    title: str
    fields: tuple[tuple[str, str], ...]  # what the signed bytes say, for a person to read
    payload: bytes  # the serialized PolicyActivation or AgencyEntry, exactly as it will be signed
    message: bytes  # context || payload: what the signature covers
    created_ms: int
    files: dict[str, bytes] = field(default_factory=dict)  # the bundle, for an activation
    reason: str = ""  # for a status change (travels beside the signed entry)
    back: str = "/"
    notes: tuple[str, ...] = ()  # what it would change (not signed)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.message).hexdigest()


class PendingActions:
    """Prepared, not yet confirmed actions, by id (in memory: a run's own)."""

    def __init__(self) -> None:
        self._items: dict[str, Pending] = {}

    def _expire(self, now_ms: int) -> None:
        for key in [k for k, p in self._items.items() if now_ms - p.created_ms > TTL_MS]:
            del self._items[key]

    def new_id(self) -> str:
        return secrets.token_urlsafe(16)

    def add(self, pending: Pending, now_ms: int) -> None:
        self._expire(now_ms)
        self._items[pending.id] = pending

    def get(self, key: str, now_ms: int) -> Pending:
        self._expire(now_ms)
        pending = self._items.get(key)
        if pending is None:
            raise NotFound(
                "no such prepared action: it was confirmed, cancelled or expired "
                f"(after {TTL_MS // 60000} minutes); nothing was signed"
            )
        return pending

    def take(self, key: str, now_ms: int) -> Pending:
        pending = self.get(key, now_ms)
        del self._items[key]
        return pending

    def cancel(self, key: str) -> None:
        self._items.pop(key, None)


def activation(
    key: str,
    *,
    kind: str,
    admin: str,
    version: str,
    reason: str,
    sequence: int,
    at_ms: int,
    files: dict[str, bytes],
    back: str,
    clock: str,
) -> Pending:
    """Prepare "activate bundle `version` as activation number `sequence`"."""
    if not reason.strip():
        raise InvalidArgument("give a reason: it is signed and kept in the log")
    payload = admin_pb2.PolicyActivation(
        version=version, admin=admin, activated_at_ms=at_ms, reason=reason, sequence=sequence
    ).SerializeToString(deterministic=True)
    title = "Roll back the policy" if kind == ROLLBACK else "Activate a policy bundle"
    return Pending(
        key,
        kind,
        title,
        (
            ("version", version),
            ("admin", admin),
            ("activated_at_ms", f"{at_ms} ({clock})"),
            ("reason", reason),
            ("sequence", str(sequence)),
        ),
        payload,
        act.activation_message(payload),
        at_ms,
        files=files,
        back=back,
    )


def status_change(
    key: str,
    *,
    current: admin_pb2.AgencyEntry,
    status: str,
    reason: str,
    at_ms: int,
    back: str,
) -> Pending:
    """Prepare the next revision of an agency's entry with a new status."""
    if not reason.strip():
        raise InvalidArgument("give a reason: it is recorded with the change")
    if current.status == status:
        raise FailedPrecondition(f"{current.id} is already {status}")
    if current.status == "revoked":
        raise FailedPrecondition(f"{current.id} is revoked; register it again under a new id")
    entry = admin_pb2.AgencyEntry()
    entry.CopyFrom(current)
    entry.status = status
    entry.revision += 1
    payload = entry.SerializeToString(deterministic=True)
    verb = {"suspended": "Suspend", "active": "Reactivate", "revoked": "Revoke"}[status]
    return Pending(
        key,
        STATUS,
        f"{verb} agency {entry.id}",
        (
            ("id", entry.id),
            ("country", entry.country),
            ("roles", ", ".join(entry.roles) or "-"),
            ("groups", ", ".join(entry.groups) or "-"),
            ("purposes", ", ".join(entry.purposes) or "-"),
            ("status", f"{current.status} → {entry.status}"),
            ("key_serial", str(entry.key_serial)),
            ("revision", f"{current.revision} → {entry.revision}"),
        ),
        payload,
        act.entry_message(payload),
        at_ms,
        reason=reason,
        back=back,
    )


async def execute(pending: Pending, sources: Sources) -> str:
    """Sign exactly the prepared bytes with the administrator's key and send them."""
    admin = sources.admin()
    if pending.kind in (ACTIVATE, ROLLBACK):
        a = admin_pb2.PolicyActivation.FromString(pending.payload)
        signed = admin.sign_activation(a.version, a.reason, a.sequence, now_ms=a.activated_at_ms)
        if signed.activation != pending.payload:
            raise InvalidArgument("the activation signed differs from the one shown: not sent")
        resp = await sources.admin_call(
            "ActivatePolicy",
            admin_pb2.ActivatePolicyRequest(
                bundle=act.bundle_message(pending.files), activation=signed
            ),
        )
        return f"policy {resp.version[:16]} active as activation {resp.sequence}"
    entry = admin_pb2.AgencyEntry.FromString(pending.payload)
    signed_entry = admin.sign_entry(entry)
    if signed_entry.entry != pending.payload:
        raise InvalidArgument("the entry signed differs from the one shown: not sent")
    resp = await sources.admin_call(
        "SetAgencyStatus",
        admin_pb2.SetAgencyStatusRequest(entry=signed_entry, reason=pending.reason),
    )
    return f"{resp.agency.id} is now {resp.agency.status} (revision {resp.agency.revision})"
