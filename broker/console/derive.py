"""What the console's pages show, derived from verified log leaves (pure).

Input is always the transparency log's leaves in order (checked against a
signed checkpoint by :class:`broker.console.sources.Sources`) and, where a
page needs them, decision records already checked against their digests.
Nothing here reads a clock: periods and "now" are parameters.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from broker.core import logleaf
from broker.v1 import audit_pb2

Key = tuple[str, int]
Indexed = Sequence[tuple[int, audit_pb2.LogLeaf]]

# Flow outcomes, in drawing order.
RECEIVED = "received"  # sealed for the recipient and receipted
AWAITING = "awaiting"  # sealed, no receipt yet
UNDELIVERED = "undelivered"  # dead-lettered: no receipt after the last attempt
WITHHELD = "withheld"  # denied by the policy at publication (the recipient got other sections)
REFUSED = "refused"  # the whole delivery refused: withheld when due, or every section denied
OUTCOMES = (RECEIVED, AWAITING, UNDELIVERED, WITHHELD, REFUSED)
OUTCOME_TEXT = {
    RECEIVED: "received (signed receipt)",
    AWAITING: "sealed, awaiting receipt",
    UNDELIVERED: "dead-lettered",
    WITHHELD: "withheld by the policy",
    REFUSED: "recipient refused",
}


@dataclass(frozen=True)
class Step:
    """One log entry about a notice, as a line of its journey."""

    index: int
    at_ms: int
    kind: str
    text: str
    recipient: str = ""


@dataclass
class NoticeView:
    notice_id: str
    version: int
    kind: str
    originator: str
    accepted_at_ms: int
    expires_at_ms: int
    header_digest: bytes
    policy_version: str = ""
    decision_index: int = -1
    decision: audit_pb2.PolicyDecision | None = None
    planned: dict[str, tuple[str, ...]] = field(default_factory=dict)
    receipts: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    withheld: list[audit_pb2.SectionsWithheld] = field(default_factory=list)
    undelivered: dict[str, str] = field(default_factory=dict)  # dead-lettered: recipient -> why
    refused: dict[str, str] = field(default_factory=dict)  # withheld when due: recipient -> why
    steps: list[Step] = field(default_factory=list)

    @property
    def key(self) -> Key:
        return (self.notice_id, self.version)

    @property
    def awaiting(self) -> list[str]:
        done = {*self.receipts, *self.undelivered, *self.refused}
        return [r for r in self.planned if r not in done]


def notices(leaves: Indexed) -> dict[Key, NoticeView]:
    """Every notice version in the log, with what the log says happened to it."""
    out: dict[Key, NoticeView] = {}
    by_id: defaultdict[str, list[NoticeView]] = defaultdict(list)
    for index, leaf in leaves:
        kind = logleaf.kind_of(leaf)
        if kind == logleaf.NOTICE:
            n = leaf.notice
            view = NoticeView(
                n.notice_id,
                n.version,
                n.kind,
                n.originator,
                n.accepted_at_ms,
                n.expires_at_ms,
                bytes(n.header_digest),
            )
            out[view.key] = view
            by_id[n.notice_id].append(view)
            view.steps.append(Step(index, leaf.logged_at_ms, kind, logleaf.describe(leaf)))
            continue
        if kind not in (
            logleaf.DECISION,
            logleaf.RECEIPT,
            logleaf.WITHHELD,
            logleaf.LIFECYCLE,
            logleaf.REQUEST_STEP,  # + judicial: a request's steps join its notice's journey
        ):
            continue
        ref = logleaf.index_of(leaf)
        targets = (
            [out[(ref.notice_id, ref.version)]]
            if (ref.notice_id, ref.version) in out
            else by_id.get(ref.notice_id, [])[-1:]  # version 0: the action is on the notice
        )
        for view in targets:
            _apply(view, index, leaf, kind)
    return out


def _apply(view: NoticeView, index: int, leaf: audit_pb2.LogLeaf, kind: str) -> None:
    recipient = ""
    if kind == logleaf.DECISION:
        d = leaf.decision
        view.policy_version, view.decision_index, view.decision = d.policy_version, index, d
        view.planned = {p.recipient: tuple(p.sections) for p in d.planned}
    elif kind == logleaf.RECEIPT:
        r = leaf.receipt
        recipient = r.recipient
        view.receipts[r.recipient] = (tuple(r.sections), leaf.logged_at_ms)
    elif kind == logleaf.WITHHELD:
        w = leaf.withheld
        recipient = w.recipient
        view.withheld.append(w)
        if w.reason not in (logleaf.DENIED_BY_POLICY, logleaf.NOT_SEALED):
            view.refused[w.recipient] = f"withheld when due: {w.reason}"
    elif kind == logleaf.REQUEST_STEP:
        recipient = leaf.request_step.executor
    else:
        e = leaf.lifecycle
        recipient = e.recipient
        if e.kind == "dead_lettered" and e.recipient in view.planned and e.version:
            view.undelivered[e.recipient] = f"dead-lettered: {e.detail}"
    view.steps.append(Step(index, leaf.logged_at_ms, kind, logleaf.describe(leaf), recipient))


# ----------------------------------------------------------------------------- flows


@dataclass(frozen=True)
class FlowCell:
    """What one recipient got of one kind of notice over the period, by outcome."""

    kind: str
    recipient: str
    outcome: str
    sections: int  # (notice version, section) pairs
    notices: int
    names: tuple[str, ...]  # section names involved


@dataclass(frozen=True)
class Flows:
    start_ms: int
    end_ms: int
    notices: int
    cells: tuple[FlowCell, ...]
    kinds: tuple[str, ...]
    recipients: tuple[str, ...]
    records_missing: int  # decisions whose record the broker did not serve (refusals unknown)

    def total(self, outcome: str) -> int:
        return sum(c.sections for c in self.cells if c.outcome == outcome)


def refused_recipients(record: bytes) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Recipients a decision record denies every section: {recipient: (sections, rules)}."""
    try:
        raw = json.loads(record)
        decided = [
            (str(d["recipient"]), str(d["section"]), bool(d["allowed"]), d.get("rules") or [])
            for d in raw.get("decisions") or []
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    by: defaultdict[str, list[tuple[str, bool, list[str]]]] = defaultdict(list)
    for recipient, section, allowed, rules in decided:
        by[recipient].append((section, allowed, [str(r) for r in rules]))
    out = {}
    for recipient, rows in by.items():
        if rows and not any(allowed for _, allowed, _ in rows):
            rules = tuple(dict.fromkeys(r for _, _, rs in rows for r in rs))
            out[recipient] = (tuple(sorted(s for s, _, _ in rows)), rules)
    return out


def flows(
    views: Iterable[NoticeView],
    records: Mapping[Key, bytes],
    start_ms: int,
    end_ms: int,
    kind: str = "",
) -> Flows:
    """Who received which sections of which kinds of notice accepted in [start, end]."""
    acc: defaultdict[tuple[str, str, str], tuple[int, set[Key], set[str]]] = defaultdict(
        lambda: (0, set(), set())
    )

    def add(k: str, recipient: str, outcome: str, key: Key, names: Sequence[str]) -> None:
        if not names:
            return
        n, keys, all_names = acc[(k, recipient, outcome)]
        keys.add(key)
        all_names.update(names)
        acc[(k, recipient, outcome)] = (n + len(names), keys, all_names)

    count, missing = 0, 0
    for v in views:
        if not start_ms <= v.accepted_at_ms <= end_ms or (kind and v.kind != kind):
            continue
        if v.kind.startswith("reply."):
            continue  # replies go back to the originator: not a flow of personal data out
        count += 1
        for recipient, sections in v.planned.items():
            if recipient in v.receipts:
                outcome = RECEIVED
            elif recipient in v.refused:
                outcome = REFUSED
            elif recipient in v.undelivered:
                outcome = UNDELIVERED
            else:
                outcome = AWAITING
            add(v.kind, recipient, outcome, v.key, sections)
        for w in v.withheld:
            if w.reason == logleaf.DENIED_BY_POLICY:
                add(v.kind, w.recipient, WITHHELD, v.key, list(w.sections))
        if v.decision is not None:
            record = records.get(v.key)
            if record is None:
                missing += 1
                continue
            for recipient, (sections, _rules) in refused_recipients(record).items():
                if recipient != v.originator and recipient not in v.planned:
                    add(v.kind, recipient, REFUSED, v.key, sections)
    cells = tuple(
        FlowCell(k, r, o, n, len(keys), tuple(sorted(names)))
        for (k, r, o), (n, keys, names) in sorted(
            acc.items(), key=lambda item: (item[0][0], item[0][1], OUTCOMES.index(item[0][2]))
        )
    )
    return Flows(
        start_ms,
        end_ms,
        count,
        cells,
        tuple(sorted({c.kind for c in cells})),
        tuple(sorted({c.recipient for c in cells})),
        missing,
    )


# ------------------------------------------------------------------ policy and registry


@dataclass(frozen=True)
class Activation:
    index: int
    sequence: int
    version: str
    by: str
    at_ms: int
    reason: str


def activations(leaves: Indexed) -> list[Activation]:
    """Every PolicyActivated leaf, newest first."""
    out = [
        Activation(
            i,
            leaf.policy_activated.sequence,
            leaf.policy_activated.version,
            leaf.policy_activated.activated_by,
            leaf.policy_activated.activated_at_ms,
            leaf.policy_activated.reason,
        )
        for i, leaf in leaves
        if logleaf.kind_of(leaf) == logleaf.POLICY_ACTIVATED
    ]
    return out[::-1]


def registry(leaves: Indexed) -> dict[str, tuple[int, audit_pb2.RegistryChange]]:
    """The latest RegistryChange of every agency still in the registry, by id."""
    out: dict[str, tuple[int, audit_pb2.RegistryChange]] = {}
    for _, leaf in leaves:
        if logleaf.kind_of(leaf) == logleaf.REGISTRY_CHANGE:
            change = leaf.registry_change
            if change.change == "removed":
                out.pop(change.agency_id, None)
            else:
                out[change.agency_id] = (leaf.logged_at_ms, change)
    return dict(sorted(out.items()))


def signers(note: str, log_name: str) -> tuple[str, ...]:
    """Every name other than the log's that signed a note (verified or not), in order."""
    _, _, sigs = note.partition("\n\n")
    names = [line.split(" ")[1] for line in sigs.splitlines() if line.startswith("\u2014 ")]
    return tuple(n for n in names if n != log_name)
