"""The relay's decisions, as pure functions: what a publish must satisfy before
anything is stored, and what a receipt batch must satisfy before it counts.

The gRPC shell (broker/server) decodes, calls these with `now_ms` and the
registry and policy it holds, persists what they return, and encodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from broker.core import bounds, content, records
from broker.core import decisions as dc
from broker.core import envelope as env
from broker.core import receipts as rcp
from broker.core.bounds import quote
from broker.core.policy import AgencyProfile, Bundle, Decision, NoticeFacts, RecipientDecision
from broker.core.policy.bundle import PolicyError
from broker.core.policy.model import Restrictions
from broker.core.suites import SuitePolicy
from broker.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PolicyRefused,
    Refusal,
    ResourceExhausted,
)
from broker.v1 import agency_pb2, notice_pb2

TLP_NAMES = {
    notice_pb2.TLP_CLEAR: "CLEAR",
    notice_pb2.TLP_GREEN: "GREEN",
    notice_pb2.TLP_AMBER: "AMBER",
    notice_pb2.TLP_AMBER_STRICT: "AMBER+STRICT",
    notice_pb2.TLP_RED: "RED",
}
DATA_SUBJECT_NAMES = {
    notice_pb2.DATA_SUBJECT_SUSPECT: "suspect",
    notice_pb2.DATA_SUBJECT_CONVICTED: "convicted",
    notice_pb2.DATA_SUBJECT_VICTIM: "victim",
    notice_pb2.DATA_SUBJECT_WITNESS: "witness",
    notice_pb2.DATA_SUBJECT_OTHER: "other",
    notice_pb2.DATA_SUBJECT_NONE: "none",
}
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Limits:
    """Sizes, counts and time windows the broker enforces (configurable in broker.toml)."""

    max_envelope_bytes: int = 4 * 1024 * 1024
    max_publish_batch: int = 64
    max_sections: int = 16
    max_recipients: int = 256
    max_clock_skew_ms: int = 5 * 60_000
    lease_ms: int = 30_000
    max_attempts: int = 5
    max_receipts_per_batch: int = 1024


@dataclass(frozen=True)
class RegisteredAgency:
    """A registry entry with the keys its CA-signed statement binds."""

    profile: AgencyProfile
    signing_key: bytes
    encryption_key: bytes
    statement: bytes
    signed_entry: bytes | None = None  # serialized SignedAgencyEntry, once an admin signed it
    pq_signing_key: bytes = b""  # ML-DSA-65 public key when the statement carries one
    pq_encryption_key: bytes = b""  # its MLKEM768X25519 key: it can open the hybrid suite

    @property
    def verify_key(self) -> bytes:
        """Ed25519, or Ed25519 || ML-DSA-65: what header and receipt signatures verify with."""
        return self.signing_key + self.pq_signing_key


@dataclass(frozen=True)
class Plan:
    """One delivery to queue: who, which sections, and not before when (embargo), with the
    obligations the policy attaches to those sections."""

    recipient: str
    sections: tuple[str, ...]
    not_before_ms: int = 0
    obligations: tuple[notice_pb2.Obligation, ...] = ()
    wire_obligations: bytes = b""  # the same, encoded for the delivery (delivery.cut_notice)


@dataclass(frozen=True)
class AcceptedNotice:
    """A publish that passed every check: what to store and whom to deliver to."""

    checked: env.CheckedEnvelope
    envelope_bytes: bytes
    envelope_digest: bytes
    plans: tuple[Plan, ...]
    decisions: tuple[RecipientDecision, ...]
    policy_version: str

    facts: NoticeFacts | None = None
    recipients: tuple[AgencyProfile, ...] = ()
    shape: dc.ShapeOutcome | None = None  # the cached outcome the decisions came from

    def refused(self) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
        """(recipient, section, rules) of every section the policy refused an addressed
        recipient (for the log's withholding leaves)."""
        if self.facts is None:
            return ()
        out = []
        for p in self.plans:
            missing = set(self.facts.sections) - set(p.sections)
            if not missing:
                continue
            decisions = (
                self.shape.decision(p.recipient).decisions
                if self.shape is not None
                else next(d.decisions for d in self.decisions if d.recipient == p.recipient)
            )
            out += [
                (p.recipient, d.section, d.rules)
                for d in decisions
                if d.section in missing and not d.allowed
            ]
        return tuple(out)

    def decision_record(self) -> str:
        """The JSON decision record (see broker.core.records): its SHA-256 is logged."""
        if self.shape is not None and self.facts is not None:
            return dc.decision_record(
                self.policy_version, self.facts, self.shape, [p.recipient for p in self.plans]
            )
        return records.decision_record(
            self.policy_version, self.facts, self.recipients, self.decisions
        )


def restrictions_of(msg: notice_pb2.OriginatorRestrictions) -> Restrictions:
    """Convert wire restrictions into the policy's value."""
    return Restrictions(
        allow_agencies=frozenset(msg.allow_agencies),
        deny_agencies=frozenset(msg.deny_agencies),
        allow_countries=frozenset(msg.allow_countries),
        deny_countries=frozenset(msg.deny_countries),
        allow_groups=frozenset(msg.allow_groups),
        deny_groups=frozenset(msg.deny_groups),
        embargo_until_ms=msg.embargo_until_ms,
    )


def facts_of(
    header: notice_pb2.NoticeHeader,
    restrictions: notice_pb2.OriginatorRestrictions,
    sections: Sequence[str],
) -> NoticeFacts:
    """What the policy may see of a notice."""
    tlp = TLP_NAMES.get(header.tlp)
    if tlp is None:
        raise InvalidArgument("header.tlp must be set (CLEAR, GREEN, AMBER, AMBER+STRICT, RED)")
    return NoticeFacts(
        originator=header.originator,
        kind=header.kind,
        purpose=header.purpose,
        tlp=tlp,
        sections=tuple(sections),
        handling_codes=tuple(header.handling_codes),
        restrictions=restrictions_of(restrictions),
        data_subject=DATA_SUBJECT_NAMES.get(header.data_subject, ""),
        evaluation=(header.evaluation.source, header.evaluation.information),
        created_at_ms=header.created_at_ms,
    )


def resolve_audience(
    draft: notice_pb2.NoticeHeader,
    restrictions: notice_pb2.OriginatorRestrictions,
    sections: Sequence[str],
    caller: str,
    registry: Mapping[str, RegisteredAgency],
    policy: Bundle,
    now_ms: int,
) -> list[RecipientDecision]:
    """Decide who may read which sections of a draft notice published by `caller`.

    Raises InvalidArgument when the draft does not fit the catalogue.
    """
    if draft.originator and draft.originator != caller:
        raise PermissionDenied(f"you are {caller}; you cannot draft notices as {draft.originator}")
    me = registry.get(caller)
    if me is None:
        raise PermissionDenied(f"{caller} is not in the agency registry")
    if me.profile.status != "active":
        raise FailedPrecondition(f"{caller} is {me.profile.status} and may not publish")
    if len(set(sections)) != len(sections):
        raise InvalidArgument("section names must be unique")
    header = notice_pb2.NoticeHeader()
    header.CopyFrom(draft)
    header.originator = caller
    facts = facts_of(header, restrictions, sections)
    try:
        policy.check_notice(facts)
    except PolicyError as exc:
        raise InvalidArgument(str(exc)) from exc
    return policy.audience(facts, [a.profile for a in registry.values()], now_ms=now_ms)


def withholdings(decisions: Sequence[Decision]) -> list[agency_pb2.Withholding]:
    """What one recipient is refused, as ResolveAudience and a publishing node report it:
    the whole notice at once when every section is refused for the same rules, else one
    entry per refused section."""
    refused = [d for d in decisions if not d.allowed]
    if not refused:
        return []
    if len(refused) == len(decisions) and len({d.rules for d in refused}) == 1:
        d = refused[0]
        return [agency_pb2.Withholding(agency_id=d.recipient, reason=d.reason, rules=d.rules)]
    return [
        agency_pb2.Withholding(
            agency_id=d.recipient, section=d.section, reason=d.reason, rules=d.rules
        )
        for d in refused
    ]


def accept_publish(
    envelope_bytes: bytes,
    caller: str,
    registry: Mapping[str, RegisteredAgency],
    policy: Bundle,
    now_ms: int,
    limits: Limits,
    *,
    cache: dc.DecisionCache | None = None,
    registry_key: str = "",
    envelope: notice_pb2.Envelope | None = None,
    suites: SuitePolicy | None = None,
) -> AcceptedNotice:
    """Check one published envelope completely; return what to store.

    The policy is decided by the compiled masks, once per notice shape (`cache`, keyed
    by the bundle, `registry_key` and the shape; pass the same cache and a key that
    changes with the registry); rules and reasons are explained only for what is
    refused, and obligations once per shape and recipient. `envelope` may carry the
    already parsed `envelope_bytes`. `suites` (broker.toml [crypto]) names the envelope
    suites allowed, per kind; None allows both.

    Raises (each with a message saying what to fix): ResourceExhausted (too
    large or too many), InvalidArgument (malformed, bad signature, unknown kind
    or recipient, bad times, a content manifest lacking a field the kind requires),
    PermissionDenied (publishing as another agency, or a wrap the policy does not allow),
    FailedPrecondition (expired, or the originator is not active).
    """
    if len(envelope_bytes) > limits.max_envelope_bytes:
        raise ResourceExhausted(
            f"envelope is {len(envelope_bytes)} bytes; the limit is {limits.max_envelope_bytes}"
        )
    if envelope is None:
        envelope = notice_pb2.Envelope()
        try:
            envelope.ParseFromString(envelope_bytes)
        except DecodeError as exc:
            raise InvalidArgument("envelope is not a valid broker.v1.Envelope") from exc
    if len(envelope.sections) > limits.max_sections:
        raise ResourceExhausted(f"at most {limits.max_sections} sections per notice")
    if len(envelope.wraps) > limits.max_recipients:
        raise ResourceExhausted(f"at most {limits.max_recipients} recipients per notice")
    try:
        claimed = env.peek_originator(envelope.header)
    except env.OpenError as exc:
        raise InvalidArgument("envelope header is not a valid broker.v1.NoticeHeader") from exc
    if claimed != caller:
        raise PermissionDenied(
            f"you are {caller}; a notice whose originator is {quote(claimed)} cannot come from you"
        )
    me = registry.get(caller)
    if me is None:
        raise PermissionDenied(f"{caller} is not in the agency registry")
    if me.profile.status != "active":
        raise FailedPrecondition(f"{caller} is {me.profile.status} and may not publish")
    checked = env.check_envelope(envelope, me.verify_key)
    header = checked.header
    spec = policy.kinds.get(header.kind)  # + post-quantum: the signed policy's suites too
    (suites or SuitePolicy()).check(envelope.header.suite, header.kind, spec.suites if spec else ())
    if header.version < 1:
        raise InvalidArgument("header.version must be 1 or more")
    _check_times(header, now_ms, limits, policy)
    facts = facts_of(header, checked.restrictions, sorted(checked.sections))
    check_restrictions(header, checked.restrictions, facts, registry, policy)

    wraps = checked.wrap_sections
    for recipient in wraps:
        if not wraps[recipient]:
            raise InvalidArgument(f"the key wrap for {recipient} names no sections")
        if recipient not in registry:
            raise InvalidArgument(f"recipient {quote(recipient)} is not in the agency registry")
        if recipient == caller:
            raise InvalidArgument("a notice cannot be addressed to its own originator")
        if envelope.header.suite == env.SUITE_HYBRID and not registry[recipient].pq_encryption_key:
            raise FailedPrecondition(
                f"recipient {recipient}'s key statement carries no post-quantum key, so it "
                "cannot open the hybrid suite; seal to it with the classical suite"
            )
        unknown = sorted(set(wraps[recipient]) - set(checked.sections))
        if unknown:
            raise InvalidArgument(
                f"the key wrap for {recipient} names sections the notice lacks: {unknown}"
            )
    shape = (cache if cache is not None else dc.DecisionCache(1)).outcome(
        policy, registry_key, [a.profile for a in registry.values()], facts, now_ms
    )
    if spec is not None:  # the catalogue's content_fields, on the signed manifest's names
        try:
            content.check_manifest(spec, checked.manifest, checked.sections.keys())
        except content.ContentError as exc:
            raise InvalidArgument(f"{exc}; nothing was stored") from exc
    plans = []
    for recipient in sorted(wraps):
        mine = wraps[recipient]
        if not set(mine) <= shape.allowed(recipient):
            refused = [
                d
                for d in shape.decision(recipient).decisions
                if d.section in mine and not d.allowed
            ]
            why = "; ".join(f"{d.section}: {d.reason} [{', '.join(d.rules)}]" for d in refused)
            raise PolicyRefused(
                f"policy {policy.version[:12]} does not allow {recipient} to read: {why}. "
                "Resolve the audience again and re-seal; nothing was stored",
                tuple(Refusal(d.recipient, d.section, d.rules, d.reason) for d in refused),
            )
        hold = shape.deliver_after_ms(recipient, mine)
        plans.append(
            Plan(
                recipient,
                mine,
                hold if hold > now_ms else 0,
                shape.obligations(recipient, mine),
                shape.wire_obligations(recipient, mine),
            )
        )
    return AcceptedNotice(
        checked=checked,
        envelope_bytes=envelope_bytes,
        envelope_digest=hashlib.sha256(envelope_bytes).digest(),
        plans=tuple(plans),
        decisions=tuple(shape.decision(p.recipient) for p in plans),
        policy_version=policy.version,
        facts=facts,
        recipients=tuple(registry[p.recipient].profile for p in plans),
        shape=shape,
    )


def _check_times(
    header: notice_pb2.NoticeHeader, now_ms: int, limits: Limits, policy: Bundle
) -> None:
    created, expires = header.created_at_ms, header.expires_at_ms
    if created <= 0 or expires <= 0:
        raise InvalidArgument("header.created_at_ms and header.expires_at_ms must be set")
    if abs(created - now_ms) > limits.max_clock_skew_ms:
        raise InvalidArgument(
            f"header.created_at_ms is {(created - now_ms) / 1000:+.0f} s from the broker's clock; "
            f"allowed skew is {limits.max_clock_skew_ms // 1000} s: check the node's clock"
        )
    if expires <= now_ms:
        raise FailedPrecondition("the notice has already expired; set a later expires_at_ms")
    spec = policy.kinds.get(header.kind)
    if spec is not None and expires - created > spec.retention_days * DAY_MS:
        raise InvalidArgument(
            f"{header.kind} may be kept at most {spec.retention_days} days; shorten expires_at_ms"
        )


def accept_receipts(
    batch: notice_pb2.ReceiptBatch,
    caller: str,
    registry: Mapping[str, RegisteredAgency],
    limits: Limits,
) -> list[tuple[notice_pb2.ProvenReceipt, notice_pb2.Receipt]]:
    """Verify a receipt batch signed by `caller`: one (proven receipt, receipt) per entry.

    Raises PermissionDenied when the batch is signed as another agency or the caller is
    not (or no longer) registered, FailedPrecondition when a suspended or revoked agency
    receipts a notice (it may still acknowledge lifecycle actions, such as an order to
    erase), InvalidArgument when it does not verify, ResourceExhausted when too large.
    """
    if batch.signer != caller:
        raise PermissionDenied(
            f"you are {caller}; you cannot submit receipts as {quote(batch.signer)}"
        )
    if len(batch.receipts) > limits.max_receipts_per_batch:
        raise ResourceExhausted(f"at most {limits.max_receipts_per_batch} receipts per batch")
    me = registry.get(caller)
    if me is None:
        raise PermissionDenied(f"{caller} is not in the agency registry")
    verified = rcp.verify_receipts(batch, me.verify_key)
    if me.profile.status != "active" and any(not r.action_id for _p, r in verified):
        raise FailedPrecondition(
            f"{caller} is {me.profile.status}: its receipts of notices do not count"
        )
    return verified


RESTRICTION_UPDATE_CONTEXT = b"broker.v1 restriction update\x00"


def sign_restriction_update(update: bytes, signing_seed: bytes) -> bytes:
    """The originator's signature over a serialized RestrictionUpdate (Ed25519, or hybrid
    with a 64-byte hybrid key: broker.core.hybrid.sign_as)."""
    from broker.core.hybrid import sign_as

    return sign_as(signing_seed, RESTRICTION_UPDATE_CONTEXT, update)


def check_restrictions(
    header: notice_pb2.NoticeHeader,
    restrictions: notice_pb2.OriginatorRestrictions,
    facts: NoticeFacts,
    registry: Mapping[str, RegisteredAgency],
    policy: Bundle,
    *,
    signed_embargo: bool = True,
) -> None:
    """What Publish and UpdateRestrictions both require of a notice and its restrictions
    (the same code, so the same messages): the catalogue's rules (kind, sections, groups,
    countries, TLP, embargo length), agencies the registry knows, and an embargo that the
    signed header carries too (so a recipient's node can hold the notice itself).
    Raises InvalidArgument."""
    try:
        policy.check_notice(facts)
    except PolicyError as exc:
        raise InvalidArgument(str(exc)) from exc
    for where, ids in (
        ("allow_agencies", restrictions.allow_agencies),
        ("deny_agencies", restrictions.deny_agencies),
    ):
        unknown = sorted(a for a in ids if a not in registry)
        if unknown:
            raise InvalidArgument(
                f"restrictions.{where} names agencies the registry does not know: "
                f"{', '.join(quote(a) for a in unknown[:5])}"
            )
    if signed_embargo and header.embargo_until_ms != restrictions.embargo_until_ms:
        raise InvalidArgument(
            "header.embargo_until_ms must equal restrictions.embargo_until_ms: the embargo is "
            "signed in the header so that recipients can hold the notice themselves"
        )


def accept_restriction_update(
    update_bytes: bytes, signature: bytes, caller: str, owner: str | None, signing_key: bytes
) -> agency_pb2.RestrictionUpdate:
    """Check an originator's signed change of a notice's restrictions.

    Raises NotFound when `caller` published no such notice, InvalidArgument when the
    signature or the message is bad.
    """
    from broker.core.hybrid import valid_as

    if not valid_as(signing_key, signature, RESTRICTION_UPDATE_CONTEXT, update_bytes):
        raise InvalidArgument("the restriction update's signature does not verify with your key")
    update = agency_pb2.RestrictionUpdate()
    try:
        update.ParseFromString(update_bytes)
    except DecodeError as exc:
        raise InvalidArgument("update is not a valid broker.v1.RestrictionUpdate") from exc
    bounds.check(update, "update")
    if owner != caller:
        raise NotFound(f"you have published no notice {update.notice_id}")
    if update.sequence < 1:
        raise InvalidArgument("update.sequence must be 1 or more")
    return update


def recheck(
    facts: NoticeFacts,
    recipient: AgencyProfile | None,
    sections: Sequence[str],
    policy: Bundle,
    now_ms: int,
) -> tuple[str | None, list[notice_pb2.Obligation]]:
    """Re-run the policy when a queued delivery is due.

    Returns (why to withhold it, or None; the obligations to carry to the recipient).
    A delivery is all or nothing (the recipient's wrap holds exactly its sections), so
    one section no longer allowed withholds the whole delivery.
    """
    if recipient is None:
        return "the recipient is no longer in the registry", []
    decision = policy.decide(facts, recipient, now_ms=now_ms)
    mine = [d for d in decision.decisions if d.section in sections]
    refused = [d for d in mine if not d.allowed]
    if refused:
        return "; ".join(
            f"{d.section}: {d.reason} [{', '.join(d.rules)}] under policy {policy.version[:12]}"
            for d in refused
        ), []
    return None, [
        notice_pb2.Obligation(section=d.section, kind=o.kind, text=o.text, rule=o.rule, days=o.days)
        for d in mine
        for o in d.obligations
    ]
