"""The records the store holds and returns: frozen dataclasses, one per row shape.

Delivery states are the strings stored (PENDING to WITHHELD). Each record is
what a backend writes or reads back, whatever its SQL (agencies, notices and
their delivery plans, leases, receipts, events, policy history, lifecycle
controls and replies, the transparency log's checkpoints and material). The
interface that takes and gives them is :class:`broker.store.api.Store`; that module
re-exports every name here, so importers keep importing from it.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    priority: int = 0  # + judicial: the header's signed priority (1: urgent, leased first)


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
    log_index: int = -1  # its NoticePublished leaf (-1: a duplicate, logged before)


@dataclass(frozen=True)
class StoredPublish:
    """A stored notice version as a re-publish finds it (broker/store/quota_reads.py)."""

    originator: str
    envelope_digest: bytes
    outcome: PublishOutcome  # the answer to give again (duplicate=True)


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
    priority: int = 0  # + judicial: the signed priority
    accepted_at_ms: int = 0  # + judicial: when the broker accepted the notice (wait metric)


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


# -- lifecycle (broker/store/lifecycle.py) ------------------------------------------------
@dataclass(frozen=True)
class ControlRow:
    """A control of a notice, as its originator's status shows it."""

    action_id: str
    kind: str
    actor: str
    recipient: str
    state: str
    attempts: int
    receipt: bytes | None  # the recipient's proven acknowledgement, once it applied it


@dataclass(frozen=True)
class LeasedControl:
    seq: int
    recipient: str
    action_id: str
    action: bytes  # the signed action's bytes (a RestrictionUpdate's for kind "restricted")
    signature: bytes
    actor: str
    attempt: int
    kind: str = ""
    # "superseded": the newest version's Delivery fields 2 and 6 (its signed header and
    # the originator's key statement), the proof a recipient erases older versions on
    superseding: bytes = b""


@dataclass(frozen=True)
class ControlReceipt:
    action_id: str
    recipient: str
    digest: bytes  # SHA-256 of the action bytes, as the recipient signed it
    proven: bytes
    at_ms: int


@dataclass(frozen=True)
class ReplyRow:
    notice_id: str
    in_reply_to: str
    kind: str
    sender: str
    recipient: str
    sent_at_ms: int
    respond_by_ms: int
    answered_by: str


# -- transparency log (broker/store/tlog.py) -------------------------------------------------
@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str  # signed by the log key only
    issued_at_ms: int
    cosignatures: tuple[str, ...] = ()  # witness signature lines, without newlines

    @property
    def full_note(self) -> str:
        """The note with every witness cosignature line appended (C2SP signed-note)."""
        return self.note + "".join(line + "\n" for line in self.cosignatures)


@dataclass(frozen=True)
class PodMaterial:
    """What a proof-of-delivery bundle is made of, before proofs are added."""

    notice_id: str
    version: int
    originator: str
    entries: tuple[tuple[int, bytes, str], ...]  # (index, leaf, kind), in log order
    receipts: dict[str, bytes]  # recipient -> serialized ProvenReceipt as stored
    statements: dict[str, bytes]  # recipient -> its SignedKeyStatement in the registry


@dataclass(frozen=True)
class DecisionRow:
    notice_id: str
    version: int
    originator: str
    policy_version: str
    record: str
