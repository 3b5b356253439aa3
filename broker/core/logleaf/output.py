"""Leaves rendered for people and tools (pure): one line of text, or JSON values.

:func:`describe` writes one line per kind from the entry's fields; :func:`to_json`
is the proto3 JSON mapping (bytes as base64, the proto's field names). Part of
:mod:`broker.core.logleaf`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from broker.core.logleaf.codec import (
    CUSTODY,
    DECISION,
    LOOKUP,
    NOTICE,
    POLICY_ACTIVATED,
    RECEIPT,
    REGISTRY_CHANGE,
    REQUEST_STEP,
    WITHHELD,
    kind_of,
)
from broker.v1 import audit_pb2


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
