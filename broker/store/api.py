"""The store interface and the records it holds.

Every backend (SQLite now, PostgreSQL for several broker replicas later) must
pass tests/store/test_contract.py. Methods are synchronous and run inside a
transaction opened by the caller's `StoreRunner`; a method that raises leaves
nothing behind (its savepoint is rolled back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from broker.errors import BrokerError

# Delivery states, as stored.
PENDING = "pending"
IN_FLIGHT = "in_flight"
DELIVERED = "delivered"
DEAD = "dead"
PURGED = "purged"  # never delivered: withdrawn, superseded or expired first
WITHHELD = "withheld"  # no longer allowed when due (policy, registry or restrictions changed)


@dataclass(frozen=True)
class AgencyRecord:
    id: str
    country: str
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    purposes: tuple[str, ...]
    status: str
    statement: bytes  # serialized SignedKeyStatement (CA-signed)
    signing_key: bytes
    encryption_key: bytes
    serial: int
    signed_entry: bytes | None = None  # serialized SignedAgencyEntry, once an admin signed it


@dataclass(frozen=True)
class NoticeRecord:
    notice_id: str
    version: int
    originator: str
    kind: str
    header_digest: bytes
    envelope_digest: bytes  # SHA-256 of the envelope bytes: idempotency of re-publish
    envelope: bytes
    created_at_ms: int
    expires_at_ms: int
    accepted_at_ms: int
    policy_version: str
    decisions: str  # JSON: per (recipient, section) decisions with rule ids
    # Cut at publish (broker.core.delivery): Delivery fields 2 and 6, and the section
    # ciphertexts by position (stored once; `envelope` then holds the envelope without
    # them). Empty for notices stored before migration 5.
    head: bytes = b""
    ciphertexts: tuple[bytes, ...] = ()
    # The notice's section names and the (recipient, section, rules) the policy refused the
    # addressed recipients, for the log's withholding leaves (read from `decisions` if empty).
    sections: tuple[str, ...] = ()
    refused: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class DeliveryPlan:
    recipient: str
    sections: tuple[str, ...]
    not_before_ms: int = 0  # held until then (an embargo); 0: at once
    # The recipient's share, cut at publish (broker.core.delivery), and the policy,
    # registry and restrictions it was decided under (the forwarding-time re-check is
    # skipped while they are unchanged).
    cut: bytes = b""
    wrap: bytes = b""
    obligations: bytes = b""
    decided_under: str = ""


@dataclass(frozen=True)
class PublishOutcome:
    notice_id: str
    version: int
    header_digest: bytes
    duplicate: bool
    recipients: tuple[str, ...]
    policy_version: str


@dataclass(frozen=True)
class LeasedDelivery:
    seq: int
    recipient: str
    notice_id: str
    version: int
    sections: tuple[str, ...]
    attempt: int
    envelope: bytes
    head: bytes = b""
    cut: bytes = b""
    wrap: bytes = b""
    obligations: bytes = b""
    decided_under: str = ""
    ciphertexts: tuple[tuple[int, bytes], ...] = ()  # (position, ciphertext) the cut names


@dataclass(frozen=True)
class ReceiptRecord:
    notice_id: str
    version: int
    recipient: str
    header_digest: bytes
    proven: bytes  # serialized ProvenReceipt
    received_at_ms: int  # when the broker accepted it
    # What the signed receipt says, for the checks and the log leaf: the sections the
    # recipient opened (must be exactly those delivered), its own time, the SHA-256 of
    # the receipt bytes and the root of the signed batch.
    sections: tuple[str, ...] = ()
    claimed_at_ms: int = 0
    receipt_digest: bytes = b""
    batch_root: bytes = b""


@dataclass(frozen=True)
class ReceiptOutcome:
    """What became of one receipt: accepted (first: it delivered the notice just now), or
    refused with the error saying why (nothing of it was stored)."""

    notice_id: str
    version: int
    recipient: str
    first: bool = False
    originator: str = ""
    error: BrokerError | None = None


@dataclass(frozen=True)
class DeliveryStatus:
    recipient: str
    version: int
    state: str
    attempts: int
    sections: tuple[str, ...]
    receipt: bytes | None


@dataclass(frozen=True)
class Event:
    seq: int
    agency: str
    kind: str
    notice_id: str
    version: int
    recipient: str
    detail: str
    at_ms: int


@dataclass(frozen=True)
class ActivePolicyRow:
    version: str
    bundle: bytes
    signed_activation: bytes | None
    sequence: int


@dataclass(frozen=True)
class HistoryRow:
    sequence: int
    version: str
    admin: str
    activated_at_ms: int
    reason: str
    active: bool


@dataclass(frozen=True)
class ActionRow:
    seq: int
    actor: str
    action: str
    target: str
    detail: str
    at_ms: int


@dataclass(frozen=True)
class CorpusRow:
    notice_id: str
    version: int
    kind: str
    decisions: str


class Store(Protocol):
    """What the relay needs from durable storage."""

    def upsert_agency(self, agency: AgencyRecord) -> None: ...

    def agencies(self) -> list[AgencyRecord]: ...

    def publish(
        self, items: Sequence[tuple[NoticeRecord, Sequence[DeliveryPlan]]]
    ) -> list[PublishOutcome]:
        """Store notices and queue their deliveries, all or nothing.

        A (notice_id, version) seen before with the same envelope digest is a
        duplicate (same answer, nothing stored); with other bytes it raises
        AlreadyExists.
        """
        ...

    def lease(self, recipient: str, limit: int, now_ms: int, lease_ms: int) -> list[LeasedDelivery]:
        """Mark up to `limit` pending deliveries in flight until now+lease, oldest first."""
        ...

    def release(self, recipient: str, now_ms: int, max_attempts: int) -> list[Event]:
        """Requeue the recipient's in-flight deliveries now (it opened a new stream).

        Those out of attempts are dead-lettered instead; returns the events recorded.
        """
        ...

    def record_receipts(self, receipts: Sequence[ReceiptRecord]) -> list[tuple[str, int]]:
        """Store receipts and mark their deliveries delivered; idempotent per delivery.

        A receipt counts only for a delivery streamed to that recipient and still open (in
        flight), or already delivered (a resent receipt), naming exactly the sections
        delivered. Raises, for the first receipt that does not (and stores none of them):
        NotFound when it names no delivery to that recipient, InvalidArgument when its
        header digest or sections are not those delivered, FailedPrecondition when the
        delivery was never streamed, or was withheld, purged or dead-lettered.
        """
        ...

    def receive_receipts(self, receipts: Sequence[ReceiptRecord]) -> list[ReceiptOutcome]:
        """As record_receipts, but refuses receipts one by one: the others are stored."""
        ...

    def expire_leases(self, now_ms: int, max_attempts: int) -> list[Event]:
        """Requeue in-flight deliveries past their deadline; dead-letter those out of attempts.

        Returns the events recorded for originators (one per dead letter).
        """
        ...

    def events(self, agency: str, after_seq: int, limit: int) -> list[Event]: ...

    def ack_events(self, agency: str, up_to_seq: int) -> None: ...

    def delivery_status(
        self, originator: str, notice_id: str, version: int
    ) -> list[DeliveryStatus]:
        """Delivery state of an originator's notice; NotFound if it has none such."""
        ...

    def pending_recipients(self) -> list[str]:
        """Recipients with deliveries waiting (pending)."""
        ...

    # -- administration (see broker/store/admin.py) -----------------------------------
    def put_bundle(self, version: str, bundle: bytes) -> None: ...

    def get_bundle(self, version: str) -> bytes: ...

    def activate_bundle(
        self,
        version: str,
        signed_activation: bytes | None,
        admin: str,
        at_ms: int,
        reason: str,
        sequence: int,
    ) -> int: ...

    def active_bundle(self) -> ActivePolicyRow | None: ...

    def policy_history(self) -> list[HistoryRow]: ...

    def record_action(
        self, actor: str, action: str, target: str, detail: object, at_ms: int
    ) -> None: ...

    def admin_actions(self, limit: int) -> list[ActionRow]: ...

    def recent_notices(self, limit: int) -> list[CorpusRow]: ...

    def notice_owner(self, notice_id: str) -> str | None: ...

    def set_restrictions(
        self, notice_id: str, sequence: int, restrictions: bytes, signed: bytes, at_ms: int
    ) -> None: ...

    def all_restriction_overrides(self) -> dict[str, bytes]: ...

    def queued_with_envelopes(
        self, notice_id: str
    ) -> list[tuple[int, str, int, tuple[str, ...], bytes]]: ...

    def withhold(self, seq: int, reason: str, now_ms: int) -> Event | None: ...
