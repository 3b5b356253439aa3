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

Forwarding-time decisions (ForwardingDecision leaves: a queued delivery re-checked
when due because the bundle, the registry or the restrictions changed since publish)
are re-evaluated the same way, from the facts and profile their leaf records, under
the bundle in force. Every profile a record names (at publish or at forwarding) must be
the administrator-signed registry entry in force for that agency (the RegistryChange
leaves carry the signed entry; with ``ca_certificate`` its signature is checked too).
A receipt whose recipient-signed time is after a change that concerns its delivery
(an activation, a change of the recipient's registry entry, a restriction update of
the notice) needs a logged re-check after that change; and no section may be
receipted before the embargo hold the decision gave it.

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

from cryptography import x509

from broker.core import logleaf
from broker.core.activation import ActivationError, verify_agency_entry
from broker.core.policy import AgencyProfile, Bundle, NoticeFacts, compile_bundle
from broker.core.records import facts_from_record, profile_from_record
from broker.errors import BrokerError
from broker.v1 import admin_pb2, audit_pb2

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
PROFILE_DIFFERS = "profile-not-signed"  # a recorded profile is not the signed entry in force
UNCHECKED = "forwarded-without-recheck"  # received after a change, no re-check logged
EMBARGO_BROKEN = "received-during-embargo"
REGISTRY_ROLLBACK = "registry-rollback"  # an agency's signed entry went back in revision
SKEW_MS = 2_000  # clocks of broker and recipients (NTP-synchronised) may differ this much

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
        if not self.notice_id:  # about the registry, not a notice
            return f"{self.kind}: {self.recipient} (log entry {self.index}): {self.detail}"
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
    ca_certificate: x509.Certificate | None = None,
) -> ReplayReport:
    """Re-evaluate every logged decision; return the counts and the findings (see module)."""
    report = ReplayReport()
    registry = _Registry(ca_certificate)
    changes = _Changes()
    forwarded: dict[tuple[str, int, str], int] = {}  # (notice, version, recipient) -> when
    holds: dict[Key, dict[tuple[str, str], int]] = {}  # deliver-after per recipient, section
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
                changes.policy.append(leaf.logged_at_ms)
            in_force = leaf.policy_activated.version
        elif kind == logleaf.REGISTRY_CHANGE:
            change = registry.apply(leaf.registry_change, leaf.logged_at_ms)
            for agency, revision, highest in registry.rollbacks:
                flag(
                    Finding(
                        REGISTRY_ROLLBACK,
                        index,
                        "",
                        0,
                        f"{agency}'s registry entry went back to revision {revision} after "
                        f"revision {highest} was logged: a stale entry served as current",
                        agency,
                    )
                )
            registry.rollbacks.clear()
            if change:
                changes.agency.setdefault(leaf.registry_change.agency_id, []).append(
                    leaf.logged_at_ms
                )
        elif kind == logleaf.RESTRICTIONS:
            changes.notice.setdefault(leaf.restrictions.notice_id, []).append(leaf.logged_at_ms)
        elif kind == logleaf.FORWARDED:
            fwd = leaf.forwarded
            forwarded[(fwd.notice_id, fwd.version, fwd.recipient)] = leaf.logged_at_ms
            for x in _replay_forwarding(index, leaf, compiled, in_force, registry):
                flag(x)
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
            for f in registry.check_record(index, d, records.get(key)):
                flag(f)
            holds[key] = found.holds
            changes.published[key] = leaf.logged_at_ms
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
            for f in _check_receipt_times(index, r, holds.get(key, {}), changes, forwarded):
                flag(f)
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
    holds: dict[tuple[str, str], int] = field(default_factory=dict)  # deliver after (ms)


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
                if x.allowed and x.deliver_after_ms:
                    out.holds[(profile.id, x.section)] = x.deliver_after_ms
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


# --------------------------------------------------------------- registry and times


@dataclass
class _Changes:
    """When what a delivery's decision depends on changed (log times, ms)."""

    policy: list[int] = field(default_factory=list)  # activations that changed the bundle
    agency: dict[str, list[int]] = field(default_factory=dict)  # registry entry changes
    notice: dict[str, list[int]] = field(default_factory=dict)  # restriction updates
    published: dict[Key, int] = field(default_factory=dict)  # publish-time decision logged

    def first_after(self, key: Key, recipient: str, since: int) -> int:
        """The first change after `since` that concerns `recipient`'s copy of `key` (0: none)."""
        times = [
            *self.policy,
            *self.agency.get(recipient, ()),
            *self.notice.get(key[0], ()),
        ]
        later = [t for t in times if t > since]
        return min(later) if later else 0


_PROFILE_FIELDS = ("country", "roles", "groups", "purposes", "status")


class _Registry:
    """The administrator-signed registry entry in force per agency, from the log."""

    def __init__(self, ca_certificate: x509.Certificate | None) -> None:
        self.ca = ca_certificate
        self.entries: dict[str, dict[str, Any] | str] = {}  # id -> fields, or why unusable
        self.revisions: dict[str, int] = {}  # the highest signed revision logged per agency
        self.rollbacks: list[tuple[str, int, int]] = []  # (agency, revision, highest before)

    def apply(self, change: audit_pb2.RegistryChange, at_ms: int) -> bool:
        """Take in a RegistryChange leaf; True if the agency's profile changed."""
        before = self.entries.get(change.agency_id)
        if change.change == "removed":
            self.entries.pop(change.agency_id, None)
            return before is not None
        if not change.signed_entry:
            self.entries[change.agency_id] = "its registry entry carries no administrator signature"
            return before != self.entries[change.agency_id]
        try:
            signed = admin_pb2.SignedAgencyEntry.FromString(change.signed_entry)
            if self.ca is not None:
                # A CA-certified administrator's signature, its certificate valid when
                # the broker logged the change; the entry's own validity window is the
                # nodes' concern (a broker serving a stale entry is caught by them).
                entry = verify_agency_entry(signed, self.ca, at_ms).entry
            else:
                entry = admin_pb2.AgencyEntry.FromString(signed.entry)
        except (ActivationError, BrokerError, ValueError) as exc:
            self.entries[change.agency_id] = f"its signed registry entry does not verify ({exc})"
            return True
        if entry.revision < self.revisions.get(change.agency_id, 0):
            self.rollbacks.append(
                (change.agency_id, entry.revision, self.revisions[change.agency_id])
            )
        self.revisions[change.agency_id] = max(
            entry.revision, self.revisions.get(change.agency_id, 0)
        )
        fields = {
            "country": entry.country,
            "roles": sorted(entry.roles),
            "groups": sorted(entry.groups),
            "purposes": sorted(entry.purposes),
            "status": entry.status,
        }
        self.entries[change.agency_id] = fields
        return before != fields

    def mismatch(self, profile: Mapping[str, Any]) -> str:
        """Why `profile` (a record's JSON) is not the signed entry in force ("" if it is)."""
        agency = str(profile.get("id", ""))
        signed = self.entries.get(agency)
        if signed is None:
            return f"no signed registry entry of {agency} is in force"
        if isinstance(signed, str):
            return signed
        differ = [
            f"{name} {profile.get(name)!r} (signed: {signed[name]!r})"
            for name in _PROFILE_FIELDS
            if _norm(profile.get(name)) != _norm(signed[name])
        ]
        return "; ".join(differ)

    def check_record(
        self, index: int, d: audit_pb2.PolicyDecision, record_bytes: bytes | None
    ) -> list[Finding]:
        if record_bytes is None or hashlib.sha256(record_bytes).digest() != d.decisions_digest:
            return []  # reported by _replay_decision
        try:
            profiles = json.loads(record_bytes)["recipients"]
        except (ValueError, KeyError, TypeError):
            return []
        out = []
        for p in profiles:
            why = self.mismatch(p) if isinstance(p, dict) else "a profile that is not an object"
            if why:
                out.append(
                    Finding(
                        PROFILE_DIFFERS,
                        index,
                        d.notice_id,
                        d.version,
                        f"the decision record's profile is not the signed entry in force: {why}",
                        str(p.get("id", "")) if isinstance(p, dict) else "",
                        policy_version=d.policy_version,
                    )
                )
        return out


def _norm(value: Any) -> Any:
    return sorted(value) if isinstance(value, list | tuple) else value


def _replay_forwarding(
    index: int,
    leaf: audit_pb2.LogLeaf,
    bundles: _Bundles,
    in_force: str | None,
    registry: _Registry,
) -> list[Finding]:
    f = leaf.forwarded
    out: list[Finding] = []

    def finding(kind: str, detail: str) -> None:
        out.append(
            Finding(
                kind,
                index,
                f.notice_id,
                f.version,
                detail,
                f.recipient,
                tuple(f.sections),
                f.policy_version,
            )
        )

    if in_force is not None and f.policy_version != in_force:
        finding(NOT_IN_FORCE, f"re-checked under {f.policy_version[:12]}, not {in_force[:12]}")
    if hashlib.sha256(f.record).digest() != f.record_digest:
        finding(RECORD_TAMPERED, "the forwarding record does not match its digest")
        return out
    try:
        record = json.loads(f.record)
        facts = facts_from_record(record["notice"])
        raw_profile = record["recipient"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        finding(REPLAY_ERROR, f"the forwarding record cannot be read: {exc!r}")
        return out
    if raw_profile is None:
        if f.outcome == "allowed":
            finding(NOT_PERMITTED, "forwarded to an agency the registry no longer held")
        return out
    why = registry.mismatch(raw_profile)
    if why:
        finding(PROFILE_DIFFERS, f"the forwarding record's profile is not the signed entry: {why}")
    bundle = bundles.get(f.policy_version)
    if isinstance(bundle, str):
        finding(bundle, f"policy bundle {f.policy_version[:12]} is not available or altered")
        return out
    try:
        decided = _decide(bundle, facts, profile_from_record(raw_profile), leaf.logged_at_ms)
    except (BrokerError, TypeError, ValueError) as exc:
        finding(REPLAY_ERROR, f"the bundle cannot evaluate the recorded facts: {exc}")
        return out
    allowed = {x.section: bool(x.allowed) for x in decided.decisions}
    every = all(allowed.get(s, False) for s in f.sections)
    if f.outcome == "allowed" and not every:
        denied = sorted(s for s in f.sections if not allowed.get(s, False))
        finding(NOT_PERMITTED, f"forwarded, but the bundle denies {', '.join(denied)} now")
    elif f.outcome == "withheld" and every:
        finding(DECISION_DIFFERS, "withheld at forwarding, but the bundle allows it")
    return out


def _check_receipt_times(
    index: int,
    r: audit_pb2.DeliveryReceipt,
    holds: Mapping[tuple[str, str], int],
    changes: _Changes,
    forwarded: Mapping[tuple[str, int, str], int],
) -> list[Finding]:
    """A receipt's recipient-signed time against the embargo hold and the changes since
    publish (see the module docstring)."""
    out = []
    key = (r.notice_id, r.version)
    early = [s for s in r.sections if holds.get((r.recipient, s), 0) > r.received_at_ms + SKEW_MS]
    if early:
        until = max(holds[(r.recipient, s)] for s in early)
        out.append(
            Finding(
                EMBARGO_BROKEN,
                index,
                r.notice_id,
                r.version,
                f"received at {r.received_at_ms}, before the embargo hold until {until}",
                r.recipient,
                tuple(early),
            )
        )
    published = changes.published.get(key)
    if published is None:
        return out
    change = changes.first_after(key, r.recipient, published)
    if change and r.received_at_ms > change + SKEW_MS:
        checked = forwarded.get((r.notice_id, r.version, r.recipient), 0)
        if checked < change:
            out.append(
                Finding(
                    UNCHECKED,
                    index,
                    r.notice_id,
                    r.version,
                    f"received at {r.received_at_ms}, after a change logged at {change} that "
                    "concerns it, with no forwarding-time re-check logged since",
                    r.recipient,
                    tuple(r.sections),
                )
            )
    return out
