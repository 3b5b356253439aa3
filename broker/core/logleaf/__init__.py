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

The package's modules, each importing only those above it: `codec` (the kinds,
the bytes, whom a leaf is about), `notices` (a notice's publication and delivery
receipts), `events` (activations, registry changes, restrictions, lifecycle,
revocations, forwarding re-checks, request steps), `output` (text and JSON).
Import from `broker.core.logleaf`: this module re-exports their interface.
"""

from __future__ import annotations

from broker.core.logleaf.codec import (
    CUSTODY,
    DECISION,
    FORWARDED,
    KINDS,
    LEAF_FORMAT,
    LIFECYCLE,
    LOOKUP,
    NOTICE,
    POLICY_ACTIVATED,
    RECEIPT,
    RECIPIENT_VISIBLE_LIFECYCLE,
    REGISTRY_CHANGE,
    REQUEST_STEP,
    RESTRICTIONS,
    WITHHELD,
    LeafError,
    LeafIndex,
    index_of,
    kind_of,
    parse,
    serialize,
)
from broker.core.logleaf.events import (
    forwarding_decision,
    lifecycle,
    party_revoked,
    policy_activated,
    registry_change,
    request_step,
    restrictions_updated,
    statement_serial,
)
from broker.core.logleaf.notices import (
    DENIED_BY_POLICY,
    NOT_SEALED,
    Plan,
    Refused,
    decisions_digest,
    delivery_receipt,
    notice_published,
    policy_decision,
    publication,
    receipt_digest,
    receipt_leaf,
    withholdings,
)
from broker.core.logleaf.output import (
    describe,
    to_json,
)

__all__ = [
    "CUSTODY",
    "DECISION",
    "DENIED_BY_POLICY",
    "FORWARDED",
    "KINDS",
    "LEAF_FORMAT",
    "LIFECYCLE",
    "LOOKUP",
    "NOTICE",
    "NOT_SEALED",
    "POLICY_ACTIVATED",
    "RECEIPT",
    "RECIPIENT_VISIBLE_LIFECYCLE",
    "REGISTRY_CHANGE",
    "REQUEST_STEP",
    "RESTRICTIONS",
    "WITHHELD",
    "LeafError",
    "LeafIndex",
    "Plan",
    "Refused",
    "decisions_digest",
    "delivery_receipt",
    "describe",
    "forwarding_decision",
    "index_of",
    "kind_of",
    "lifecycle",
    "notice_published",
    "parse",
    "party_revoked",
    "policy_activated",
    "policy_decision",
    "publication",
    "receipt_digest",
    "receipt_leaf",
    "registry_change",
    "request_step",
    "restrictions_updated",
    "serialize",
    "statement_serial",
    "to_json",
    "withholdings",
]
