"""The leaf codec (pure): a leaf's kinds, its bytes, and whom it is about.

A leaf is a LogLeaf of format LEAF_FORMAT with one typed entry, named by the
entry's field (the kind constants below); its bytes are the deterministic
serialization (:func:`serialize`), read back by :func:`parse`, which refuses
anything else. :func:`index_of` maps a leaf to its :class:`LeafIndex` from its
entry alone; ``_leaf`` is the one constructor every builder goes through.
Part of :mod:`broker.core.logleaf` (its docstring has the rules leaves follow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from broker.errors import InvalidArgument
from broker.v1 import audit_pb2

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
REQUEST_STEP = "request_step"  # + judicial: RequestStepLogged (events.request_step)
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


def _leaf(logged_at_ms: int, **entry: Any) -> audit_pb2.LogLeaf:
    return audit_pb2.LogLeaf(format=LEAF_FORMAT, logged_at_ms=logged_at_ms, **entry)
