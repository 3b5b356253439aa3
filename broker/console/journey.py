"""A notice's journey as the console checks it (pure): the policy decision explained
and replayed under the bundle the log names, from the verified decision record."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from broker.console.derive import Indexed, NoticeView
from broker.core import logleaf
from broker.core import replay as rp
from broker.core.policy import compile_bundle
from broker.core.records import facts_from_record, profile_from_record
from broker.errors import BrokerError


@dataclass(frozen=True)
class Explained:
    recipient: str
    section: str
    allowed: bool
    rules: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Checked:
    """The decision of one notice version, re-evaluated here."""

    findings: tuple[rp.Finding, ...]
    explained: tuple[Explained, ...]
    problem: str = ""  # why it could not be explained (record or bundle missing or altered)

    @property
    def ok(self) -> bool:
        return not self.findings and not self.problem


def check_decision(
    view: NoticeView,
    leaves: Indexed,
    record: bytes | None,
    bundle: Mapping[str, bytes] | None,
) -> Checked:
    """Replay this notice's decision (and receipts) under its bundle; explain each section."""
    if view.decision is None:
        return Checked((), (), "the log holds no decision for this notice version")
    keep = {view.decision_index, *(s.index for s in view.steps)}
    # Its own leaves, and what replay checks them against: the bundles in force, the
    # signed registry entries, and changes of its restrictions and forwarding re-checks.
    context = (logleaf.POLICY_ACTIVATED, logleaf.REGISTRY_CHANGE)
    subset = [
        (i, leaf)
        for i, leaf in leaves
        if i in keep
        or logleaf.kind_of(leaf) in context
        or (
            logleaf.kind_of(leaf) in (logleaf.RESTRICTIONS, logleaf.FORWARDED)
            and logleaf.index_of(leaf).notice_id == view.key[0]
        )
    ]
    records = {} if record is None else {view.key: record}
    report = rp.replay(subset, records, {view.policy_version: bundle})
    findings = tuple(f for f in report.findings if (f.notice_id, f.version) == view.key)
    if (
        record is None
        or bundle is None
        or any(
            f.kind in (rp.RECORD_TAMPERED, rp.BUNDLE_TAMPERED, rp.REPLAY_ERROR) for f in findings
        )
    ):
        return Checked(findings, (), "the decision cannot be explained: see the findings")
    try:
        raw = json.loads(record)
        compiled = compile_bundle(bundle)
        facts = facts_from_record(raw["notice"])
        rows: list[Explained] = []
        for p in raw["recipients"]:
            profile = profile_from_record(p)
            decided = compiled.decide(facts, profile, now_ms=view.accepted_at_ms)
            rows.extend(
                Explained(profile.id, d.section, d.allowed, tuple(d.rules), d.reason)
                for d in decided.decisions
            )
    except (BrokerError, ValueError, KeyError, TypeError) as exc:
        return Checked(findings, (), f"the decision cannot be explained: {exc}")
    return Checked(findings, tuple(sorted(rows, key=lambda r: (r.recipient, r.section))))
