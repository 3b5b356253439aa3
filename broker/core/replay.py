"""Replay the logged decisions under the policy bundles they name (pure).

Input: the log's leaves in order (already verified against a checkpoint),
the decision records the broker serves (checked here against the digests
the PolicyDecision leaves carry) and the policy bundles' files by version
(checked here against their versions). For every PolicyDecision leaf the
bundle it names is compiled and ``decide(facts, profile)`` re-run for every
recipient in the record, with the facts and profiles the record says the
policy saw; then

* every recorded (recipient, section) decision must come out the same,
* every planned delivery and every receipted section must be permitted,
* the bundle must be the one in force: the last PolicyActivated leaf before
  the decision must name it (or the one it replaced, for a notice the broker
  accepted before that activation was logged: a publish in flight), and
  decisions that depend on time are replayed at the notice's accepted_at_ms.

Everything else is reported as a :class:`Finding`; :func:`replay` never
raises for what it finds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.core import logleaf
from broker.core.policy import AgencyProfile, Bundle, NoticeFacts, compile_bundle
from broker.core.records import facts_from_record, profile_from_record
from broker.errors import BrokerError
from broker.v1 import audit_pb2

# Finding kinds.
RECORD_MISSING = "record-missing"
RECORD_TAMPERED = "record-tampered"
BUNDLE_MISSING = "bundle-missing"
BUNDLE_TAMPERED = "bundle-tampered"
NOT_IN_FORCE = "bundle-not-in-force"
DECISION_DIFFERS = "decision-differs"
NOT_PERMITTED = "delivery-not-permitted"
UNEXPLAINED = "receipt-without-decision"
REPLAY_ERROR = "replay-error"

Key = tuple[str, int]


@dataclass(frozen=True)
class Finding:
    kind: str
    index: int  # log entry
    notice_id: str
    version: int
    detail: str
    recipient: str = ""
    sections: tuple[str, ...] = ()
    policy_version: str = ""

    def describe(self) -> str:
        who = f" to {self.recipient}" if self.recipient else ""
        what = f" [{', '.join(self.sections)}]" if self.sections else ""
        return (
            f"{self.kind}: notice {self.notice_id} v{self.version}{who}{what} "
            f"(log entry {self.index}): {self.detail}"
        )


@dataclass
class ReplayReport:
    entries: int = 0
    decisions: int = 0
    replayed: int = 0  # decisions re-evaluated
    deliveries: int = 0  # planned (recipient, notice) deliveries checked
    receipts: int = 0
    bundles: tuple[str, ...] = ()
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _decide(bundle: Bundle, facts: NoticeFacts, profile: AgencyProfile, at_ms: int) -> Any:
    # Decisions that depend on time are replayed at the time the broker accepted the notice.
    return bundle.decide(facts, profile, now_ms=at_ms)


class _Bundles:
    def __init__(self, files: Mapping[str, Mapping[str, bytes] | None]) -> None:
        self.files = files
        self.compiled: dict[str, Bundle | str] = {}

    def get(self, version: str) -> Bundle | str:
        """The compiled bundle, or the finding kind explaining why there is none."""
        if version not in self.compiled:
            files = self.files.get(version)
            if files is None:
                self.compiled[version] = BUNDLE_MISSING
            else:
                try:
                    bundle = compile_bundle(files)
                except BrokerError:
                    self.compiled[version] = BUNDLE_TAMPERED
                else:
                    ok = bundle.version == version
                    self.compiled[version] = bundle if ok else BUNDLE_TAMPERED
        return self.compiled[version]


def replay(
    entries: Iterable[tuple[int, audit_pb2.LogLeaf]],
    records: Mapping[Key, bytes],
    bundles: Mapping[str, Mapping[str, bytes] | None],
) -> ReplayReport:
    """Re-evaluate every logged decision; return the counts and the findings (see module)."""
    report = ReplayReport()
    compiled = _Bundles(bundles)
    in_force: str | None = None
    previous: tuple[str, int] | None = None  # (version before the last activation, switch time)
    accepted_at: dict[Key, int] = {}
    permitted: dict[Key, dict[tuple[str, str], tuple[bool, str]]] = {}
    flagged: dict[tuple[str, int, str], int] = {}  # delivery already reported -> finding index
    used: set[str] = set()
    troubled: set[Key] = set()  # decisions already reported as not replayable

    def flag(f: Finding) -> None:
        key = (f.notice_id, f.version, f.recipient)
        if f.kind == NOT_PERMITTED and key in flagged:
            i = flagged[key]
            old = report.findings[i]
            merged = tuple(sorted(set(old.sections) | set(f.sections)))
            detail = old.detail if "receipted" in old.detail else old.detail + "; receipted"
            report.findings[i] = dataclasses.replace(old, sections=merged, detail=detail)
            return
        if f.kind == NOT_PERMITTED:
            flagged[key] = len(report.findings)
        report.findings.append(f)

    for index, leaf in entries:
        report.entries += 1
        kind = logleaf.kind_of(leaf)
        if kind == logleaf.POLICY_ACTIVATED:
            if in_force is not None and in_force != leaf.policy_activated.version:
                previous = (in_force, leaf.logged_at_ms)
            in_force = leaf.policy_activated.version
        elif kind == logleaf.NOTICE:
            n = leaf.notice
            accepted_at[(n.notice_id, n.version)] = n.accepted_at_ms
        elif kind == logleaf.DECISION:
            report.decisions += 1
            d = leaf.decision
            key = (d.notice_id, d.version)
            then = in_force
            in_flight = previous and accepted_at.get(key, 0) <= previous[1]
            if previous and in_flight and d.policy_version == previous[0]:
                then = previous[0]  # decided before the switch was logged, logged after it
            found = _replay_decision(index, d, records.get(key), compiled, then, accepted_at)
            for f in found.findings:
                flag(f)
            if found.permitted is None:
                troubled.add(key)
            report.deliveries += len(d.planned)
            if found.permitted is not None:
                permitted[key] = found.permitted
                report.replayed += 1
                used.add(d.policy_version)
        elif kind == logleaf.RECEIPT:
            report.receipts += 1
            r = leaf.receipt
            key = (r.notice_id, r.version)
            allowed = permitted.get(key)
            if allowed is None:
                if key not in troubled:
                    flag(
                        Finding(
                            UNEXPLAINED,
                            index,
                            r.notice_id,
                            r.version,
                            "a receipt with no replayable decision before it",
                            r.recipient,
                        )
                    )
                continue
            bad = [s for s in r.sections if not allowed.get((r.recipient, s), (False, ""))[0]]
            if bad:
                why = "; ".join(
                    f"{s}: {allowed.get((r.recipient, s), (False, 'not decided'))[1]}" for s in bad
                )
                flag(
                    Finding(
                        NOT_PERMITTED,
                        index,
                        r.notice_id,
                        r.version,
                        f"receipted, but the bundle does not permit it ({why})",
                        r.recipient,
                        tuple(bad),
                    )
                )
    report.bundles = tuple(sorted(used))
    return report


@dataclass
class _Decision:
    findings: list[Finding] = field(default_factory=list)
    permitted: dict[tuple[str, str], tuple[bool, str]] | None = None


def _replay_decision(
    index: int,
    d: audit_pb2.PolicyDecision,
    record_bytes: bytes | None,
    bundles: _Bundles,
    in_force: str | None,
    accepted_at: Mapping[Key, int],
) -> _Decision:
    out = _Decision()

    def finding(kind: str, detail: str, recipient: str = "", sections: Iterable[str] = ()) -> None:
        out.findings.append(
            Finding(
                kind,
                index,
                d.notice_id,
                d.version,
                detail,
                recipient,
                tuple(sections),
                d.policy_version,
            )
        )

    if in_force is not None and d.policy_version != in_force:
        finding(
            NOT_IN_FORCE,
            f"decided under {d.policy_version[:12]} while {in_force[:12]} was the active bundle",
        )
    if record_bytes is None:
        finding(RECORD_MISSING, "the broker did not serve this decision record")
        return out
    if hashlib.sha256(record_bytes).digest() != d.decisions_digest:
        finding(RECORD_TAMPERED, "the decision record does not match the digest in the log")
        return out
    try:
        record = json.loads(record_bytes)
        if record.get("policy_version") != d.policy_version:
            finding(RECORD_TAMPERED, "the decision record names another bundle than the log")
            return out
        facts = facts_from_record(record["notice"])
        profiles = [profile_from_record(p) for p in record["recipients"]]
        recorded = {
            (str(x["recipient"]), str(x["section"])): bool(x["allowed"])
            for x in record["decisions"]
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        finding(REPLAY_ERROR, f"the decision record cannot be read: {exc!r}")
        return out
    bundle = bundles.get(d.policy_version)
    if isinstance(bundle, str):
        what = "is not available" if bundle == BUNDLE_MISSING else "does not match its version"
        finding(bundle, f"policy bundle {d.policy_version[:12]} {what}")
        return out
    at_ms = accepted_at.get((d.notice_id, d.version), 0)
    permitted: dict[tuple[str, str], tuple[bool, str]] = {}
    try:
        for profile in profiles:
            for x in _decide(bundle, facts, profile, at_ms).decisions:
                why = f"{x.reason} [{', '.join(x.rules)}]"
                permitted[(profile.id, x.section)] = (bool(x.allowed), why)
    except (BrokerError, TypeError, ValueError) as exc:
        finding(REPLAY_ERROR, f"the bundle cannot evaluate the recorded facts: {exc}")
        return out
    for (recipient, section), allowed in sorted(recorded.items()):
        again = permitted.get((recipient, section))
        if again is None or again[0] != allowed:
            now = "no decision" if again is None else ("allowed" if again[0] else "denied")
            was = "allowed" if allowed else "denied"
            finding(
                DECISION_DIFFERS,
                f"recorded {was}, the bundle gives {now}",
                recipient,
                (section,),
            )
    for plan in d.planned:
        bad = [s for s in plan.sections if not permitted.get((plan.recipient, s), (False, ""))[0]]
        if bad:
            why = "; ".join(
                f"{s}: {permitted.get((plan.recipient, s), (False, 'no profile recorded'))[1]}"
                for s in bad
            )
            finding(
                NOT_PERMITTED,
                f"delivered, but the bundle does not permit it ({why})",
                plan.recipient,
                bad,
            )
    out.permitted = permitted
    return out
