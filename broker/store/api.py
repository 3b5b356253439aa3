"""The store interface; the records it holds are in broker/store/records.py (re-exported).

Every backend (SQLite, the embedded default, and PostgreSQL, for several broker
replicas sharing one database) must pass tests/store/test_contract.py. Methods
are synchronous and run inside a transaction opened by the caller's
`StoreRunner`; a method that raises leaves nothing behind (its savepoint is
rolled back). The server and tools reach stores only through `Store`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from broker.core.checkpoint import Signer
from broker.core.lifecycle import Effect, NoticeState
from broker.core.pqnote import PQSigner
from broker.core.requests import Deadline, RequestState
from broker.errors import BrokerError
from broker.store.records import (
    DEAD,
    DELIVERED,
    IN_FLIGHT,
    PENDING,
    PURGED,
    WITHHELD,
    ActionRow,
    ActivePolicyRow,
    AgencyRecord,
    ControlReceipt,
    ControlRow,
    CorpusRow,
    DecisionRow,
    DeliveryPlan,
    DeliveryStatus,
    Event,
    HistoryRow,
    LeasedControl,
    LeasedDelivery,
    NoticeRecord,
    PodMaterial,
    PublishOutcome,
    ReceiptOutcome,
    ReceiptRecord,
    ReplyRow,
    StoredCheckpoint,
    StoredPublish,
)
from broker.v1 import audit_pb2

if TYPE_CHECKING:  # the console's views (broker/store/console_reads.py)
    from broker.store.console_reads import QueueSnapshot
    from broker.store.custody import CustodyRow  # + evidence
    from broker.store.requests import RequestRow

__all__ = [
    "DEAD",
    "DELIVERED",
    "IN_FLIGHT",
    "PENDING",
    "PURGED",
    "WITHHELD",
    "ActionRow",
    "ActivePolicyRow",
    "AgencyRecord",
    "ControlReceipt",
    "ControlRow",
    "CorpusRow",
    "DecisionRow",
    "DeliveryPlan",
    "DeliveryStatus",
    "Event",
    "HistoryRow",
    "LeasedControl",
    "LeasedDelivery",
    "NoticeRecord",
    "PodMaterial",
    "PublishOutcome",
    "ReceiptOutcome",
    "ReceiptRecord",
    "ReplyRow",
    "Store",
    "StoredCheckpoint",
    "StoredPublish",
    "Transactional",
]


class Transactional(Protocol):
    """How a StoreRunner drives a store: one transaction per group, a savepoint per operation."""

    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def savepoint(self) -> None: ...
    def release_savepoint(self) -> None: ...
    def rollback_savepoint(self) -> None: ...
    def close(self) -> None: ...


class Store(Transactional, Protocol):
    """Everything the server and the tools ask of durable storage, whatever the backend."""

    def schema_version(self) -> int: ...

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
        """Mark up to `limit` pending deliveries in flight until now+lease, urgent ones
        first, then oldest first."""
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
    ) -> bool:
        """Store a signed restriction update; False for a resend of the stored one."""
        ...

    def all_restriction_overrides(self) -> dict[str, bytes]: ...

    def latest_envelope(self, notice_id: str) -> bytes: ...

    def queued_with_envelopes(
        self, notice_id: str
    ) -> list[tuple[int, str, int, tuple[str, ...], bytes]]: ...

    def queued_to(self, recipient: str) -> list[int]:
        """Deliveries to `recipient` not yet final (pending or in flight), oldest first."""
        ...

    def withhold(
        self, seq: int, reason: str, now_ms: int, leased: bool = False
    ) -> Event | None: ...

    def add_event(
        self,
        agency: str,
        kind: str,
        notice_id: str,
        version: int,
        recipient: str,
        detail: str,
        at_ms: int,
    ) -> Event:
        """Record an event for `agency` (its Subscribe stream carries it)."""
        ...

    # -- lifecycle (see broker/store/lifecycle.py) ------------------------------------------
    def notice_state(self, notice_id: str) -> NoticeState | None: ...

    def track_notice(self, notice_id: str, expires_at_ms: int) -> None: ...

    def latest_version(self, notice_id: str) -> int: ...

    def lifecycle_action(
        self, action_id: str
    ) -> tuple[str, str, bytes, tuple[str, ...], int] | None: ...

    def take_action(
        self,
        *,
        action_id: str,
        notice_id: str,
        actor: str,
        kind: str,
        action: bytes,
        signature: bytes,
        effect: Effect,
        now_ms: int,
    ) -> int: ...

    def purge_pending(self, notice_id: str, below_version: int, why: str, now_ms: int) -> int: ...

    def action_status(self, notice_id: str) -> list[ControlRow]:
        """Every control of a notice, per recipient, with its acknowledgement."""
        ...

    def lease_controls(
        self, recipient: str, limit: int, now_ms: int, lease_ms: int
    ) -> list[LeasedControl]: ...

    def release_controls(self, recipient: str, now_ms: int, max_attempts: int) -> list[Event]: ...

    def expire_controls(
        self, now_ms: int, max_attempts: int, recipient: str | None = None
    ) -> list[Event]: ...

    def record_control_receipts(
        self, receipts: Sequence[ControlReceipt]
    ) -> list[tuple[str, str, bool]]: ...

    def receive_control_receipts(
        self, receipts: Sequence[ControlReceipt]
    ) -> list[tuple[str, str, bool, BrokerError | None]]: ...

    def control_status(self, notice_id: str) -> list[tuple[str, str, str, str, int]]: ...

    def due_expiries(self, now_ms: int, limit: int = 100) -> list[str]: ...

    def due_reviews(self, now_ms: int, lead_days: Mapping[str, int]) -> list[Event]: ...

    def record_reply(self, row: ReplyRow, recipients: Sequence[str]) -> None: ...

    def replies_for(self, agency: str, open_only: bool) -> list[ReplyRow]: ...

    # -- + judicial: requests (see broker/store/requests.py) ---------------------------------
    def request_head(self, notice_id: str) -> bytes: ...

    def request_steps(self, notice_id: str) -> list[tuple[bytes, bytes]]: ...

    def request_row(self, notice_id: str) -> RequestRow | None: ...

    def save_request_step(
        self,
        state: RequestState,
        running: Deadline | None,
        action_id: str,
        action: bytes,
        signature: bytes,
    ) -> None: ...

    def requests_for(self, agency: str, role: str, open_only: bool) -> list[RequestRow]: ...

    def due_request_reminders(self, now_ms: int) -> list[Event]: ...

    # -- transparency log (see broker/store/tlog.py) ------------------------------------------
    def tlog_size(self) -> int: ...

    def tlog_append(self, leaves: Sequence[audit_pb2.LogLeaf]) -> list[int]: ...

    def tlog_root(self, size: int) -> bytes: ...

    def tlog_inclusion(self, index: int, size: int) -> list[bytes]: ...

    def tlog_consistency(self, old_size: int, new_size: int) -> list[bytes]: ...

    def tlog_entry(self, index: int, agency: str | None) -> bytes: ...

    def tlog_entries(
        self, start: int, end: int, limit: int, agency: str | None
    ) -> tuple[list[tuple[int, bytes]], int]: ...

    def publish_logged(
        self, items: Sequence[tuple[NoticeRecord, Sequence[DeliveryPlan]]], at_ms: int
    ) -> list[PublishOutcome]: ...

    def record_receipts_logged(
        self, receipts: Sequence[ReceiptRecord], at_ms: int
    ) -> list[tuple[str, int]]: ...

    def receive_receipts_logged(
        self, receipts: Sequence[ReceiptRecord], at_ms: int
    ) -> list[ReceiptOutcome]: ...

    def tlog_sync(self, at_ms: int) -> int: ...

    def tlog_issue_checkpoint(
        self, signer: Signer, at_ms: int, pq: PQSigner | None = None
    ) -> StoredCheckpoint: ...

    def tlog_directory(self) -> dict[str, bytes]:
        """The key directory as logged: agency id -> value (broker/core/keymap.py)."""
        ...

    def directory_entries(self) -> list[tuple[str, bytes, bytes]]:
        """(agency id, signed entry or b"", key statement) of every registered agency."""
        ...

    def tlog_directory_checkpoint(self, min_cosignatures: int) -> StoredCheckpoint | None:
        """The newest checkpoint of the current key directory with enough cosignatures."""
        ...

    def tlog_checkpoint(
        self, size: int = 0, min_cosignatures: int = 0
    ) -> StoredCheckpoint | None: ...

    def tlog_add_cosignature(
        self, size: int, witness: str, line: str, signed_at: int, at_ms: int
    ) -> int: ...

    def tlog_pod_material(
        self, notice_id: str, version: int, agency: str | None
    ) -> PodMaterial: ...

    def tlog_decision_records(
        self, refs: Sequence[tuple[str, int]], agency: str | None
    ) -> list[DecisionRow]: ...

    # -- the console's views (see broker/store/console_reads.py) -------------------------------
    def checkpoints_between(
        self, since_ms: int, until_ms: int, limit: int
    ) -> tuple[list[StoredCheckpoint], int]: ...

    def queue_snapshot(self, now_ms: int, limit: int) -> QueueSnapshot: ...

    # -- + evidence: attachments' notices and chains of custody (broker/store/custody.py) ---
    def envelope_at(self, notice_id: str, version: int) -> bytes: ...

    def deliveries_of(self, notice_id: str, version: int) -> list[tuple[str, str, str, int]]: ...

    def custody_chain(self, notice_id: str, version: int, section: str) -> list[CustodyRow]: ...

    def append_custody(
        self,
        notice_id: str,
        version: int,
        section: str,
        seq: int,
        record: bytes,
        signature: bytes,
        record_digest: bytes,
        leaf: audit_pb2.LogLeaf,
    ) -> int: ...

    # -- fair sharing (see broker/store/quota_reads.py) ---------------------------------------
    def stored_publishes(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], StoredPublish]: ...

    def queued_by_originator(self) -> dict[str, int]: ...
