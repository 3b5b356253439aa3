"""The compiled engine: rules as predicates over notice attributes and recipient bitmasks.

A registry (the agencies the broker knows) is indexed once per bundle: each
agency gets a bit, and every recipient-side condition of every rule becomes
one Python integer with the bits of the agencies it matches. Deciding one
notice for every recipient and every section is then, per section, a few
integer operations over the rules whose notice-side tests hold:

    allowed[section] = permits & ~forbids & active & ~denied & allow_listed

Explanations (which rules, why, obligations) are derived from the same masks
only when somebody reads them.

Semantics (see policies/README.md): gates first (agency status, originator
deny list, originator allow list); then forbid overrides permit; no permit
means deny. For an allowed section, oblige rules attach obligations, the
catalogue's retention caps it, and hold rules defer delivery until an
embargo ends.

The compiled rules and the registry index are in :mod:`broker.core.policy.compiled`
(this module re-exports CompiledRule and RegistryIndex).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields

from broker.core.policy.compiled import CompiledRule, RegistryIndex, _Cond, _or, _Plan, _put
from broker.core.policy.model import (
    AgencyProfile,
    Decision,
    KindSpec,
    NoticeFacts,
    Obligation,
)
from broker.core.policy.source import GroupSpec, RuleSpec

__all__ = [
    "CATALOGUE_RETENTION",
    "DEFAULT_DENY",
    "GATE_ALLOW",
    "GATE_DENY",
    "GATE_STATUS",
    "CompiledRule",
    "Engine",
    "Outcome",
    "RegistryIndex",
]

GATE_STATUS = "registry.status"
GATE_DENY = "originator.deny"
GATE_ALLOW = "originator.allow"
DEFAULT_DENY = "default-deny"
CATALOGUE_RETENTION = "catalogue.retention"
_DEFAULT_REASON = "no rule permits this section for this recipient"

_INDEX_CACHE = 64
_SINGLE_CACHE = 4096
_OBLIGATION_CACHE = 65_536


_DECISION_FIELDS = tuple(f.name for f in fields(Decision))


def _fields(
    section: str,
    allowed: bool,
    rules: tuple[str, ...],
    reason: str,
    obligations: tuple[Obligation, ...],
    after: int,
) -> dict[str, object]:
    d: dict[str, object] = {
        "recipient": "",
        "section": section,
        "allowed": allowed,
        "rules": rules,
        "reason": reason,
        "obligations": obligations,
        "deliver_after_ms": after,
    }
    assert tuple(d) == _DECISION_FIELDS
    return d


def _decision_from(values: dict[str, object]) -> Decision:
    """A Decision built from its complete field dict, without the frozen dataclass's per-field
    setattr (explaining an audience builds thousands; the result is an ordinary Decision)."""
    d = object.__new__(Decision)
    object.__setattr__(d, "__dict__", values)
    return d


class Engine:
    """The compiled rules of one bundle, and the per-notice evaluation."""

    def __init__(
        self,
        kinds: Mapping[str, KindSpec],
        groups: Mapping[str, GroupSpec],
        rules: Sequence[RuleSpec],
    ) -> None:
        self.kinds = kinds
        self.groups = groups
        self.rules = tuple(CompiledRule(i, r) for i, r in enumerate(rules))
        self.plans: dict[tuple[str, str], _Plan] = {
            (k, s): _Plan(self.rules, k, s) for k, spec in kinds.items() for s in spec.sections
        }
        self._empty = _Plan((), "", "")
        self._indexes: dict[tuple[AgencyProfile, ...], RegistryIndex] = {}
        self._by_identity: dict[
            tuple[int, ...], tuple[RegistryIndex, tuple[AgencyProfile, ...]]
        ] = {}
        self._singles: dict[int, tuple[RegistryIndex, AgencyProfile]] = {}
        self.obligation_cache: dict[tuple[str, tuple[int, ...], str, str], tuple[Obligation, ...]]
        self.obligation_cache = {}

    def index(self, profiles: Sequence[AgencyProfile]) -> RegistryIndex:
        """The index of a registry, cached: first by the identity of the (immutable) profile
        objects, which the cache keeps alive so their ids stay unique, then by contents."""
        ident = tuple(map(id, profiles))
        hit = self._by_identity.get(ident)
        if hit is not None:
            return hit[0]
        key = tuple(profiles)
        idx = self._indexes.get(key)
        if idx is None:
            idx = RegistryIndex(key, self.groups, self.rules)
            _put(self._indexes, key, idx, _INDEX_CACHE)
        _put(self._by_identity, ident, (idx, key), _INDEX_CACHE)
        return idx

    def single(self, profile: AgencyProfile) -> RegistryIndex:
        hit = self._singles.get(id(profile))
        if hit is not None:
            return hit[0]
        idx = RegistryIndex((profile,), self.groups, self.rules)
        _put(self._singles, id(profile), (idx, profile), _SINGLE_CACHE)
        return idx

    def evaluate(self, facts: NoticeFacts, idx: RegistryIndex, now_ms: int) -> Outcome:
        """Decide every (recipient, section) of `facts` over the indexed registry."""
        r = facts.restrictions
        denied, listed, named = idx.restriction_masks(r)
        gate = idx.active & ~denied & listed
        purpose = idx.purposes.get(facts.purpose, 0)
        values = (
            facts.tlp,
            facts.purpose,
            facts.evaluation_code,
            facts.data_subject,
            facts.originator,
        )
        handling = facts.handling
        embargoed = r.embargo_until_ms > now_ms
        unless_masks = idx.unless_masks
        when_masks_w = idx.when_masks
        plans = self.plans
        kind = facts.kind
        allowed: list[int] = []
        forbids: list[tuple[tuple[CompiledRule, int], ...]] = []
        permits: list[tuple[tuple[CompiledRule, int], ...]] = []
        holds: list[tuple[tuple[CompiledRule, int], ...]] = []
        for section in facts.sections:
            plan = plans.get((kind, section), self._empty)
            args = (values, handling, embargoed, kind, section, named, purpose)
            f_mask, f_list = _match(plan.forbids, when_masks_w, unless_masks, args)
            p_mask, p_list = _match(plan.permits, when_masks_w, unless_masks, args)
            h_list: tuple[tuple[CompiledRule, int], ...] = ()
            if embargoed and plan.holds:
                h_list = _match(plan.holds, when_masks_w, unless_masks, args)[1]
            allowed.append(p_mask & ~f_mask & gate)
            forbids.append(f_list)
            permits.append(p_list)
            holds.append(h_list)
        return Outcome(
            self,
            facts,
            idx,
            now_ms,
            tuple(allowed),
            tuple(forbids),
            tuple(permits),
            tuple(holds),
            (denied, listed, named, purpose),
        )


_Args = tuple[tuple[str, ...], frozenset[str], bool, str, str, int, int]


def _match(
    rules: tuple[CompiledRule, ...],
    when_masks: tuple[int, ...],
    unless_masks: tuple[tuple[int, ...], ...],
    args: _Args,
) -> tuple[int, tuple[tuple[CompiledRule, int], ...]]:
    """OR of the masks of the rules that apply, and each rule with its mask."""
    values, handling, embargoed = args[0], args[1], args[2]
    total = 0
    matched = []
    for rule in rules:
        w = rule.when
        if w.has_notice_tests and not w.notice_ok(values, handling, embargoed):
            continue
        m = when_masks[rule.no]
        if not rule.simple:
            m = _refine(rule, m, unless_masks[rule.no], *args)
        if m:
            total |= m
            matched.append((rule, m))
    return total, tuple(matched)


def _refine(
    rule: CompiledRule,
    mask: int,
    unless_masks: tuple[int, ...],
    values: tuple[str, ...],
    handling: frozenset[str],
    embargoed: bool,
    kind: str,
    section: str,
    named: int,
    purpose: int,
) -> int:
    """Apply a rule's relational tests and its unless conditions to its static mask."""
    mask = _relations(rule.when, mask, named, purpose)
    for u, um in zip(rule.unless, unless_masks, strict=True):
        if u.where_ok(kind, section) and u.notice_ok(values, handling, embargoed):
            mask &= ~_relations(u, um, named, purpose)
    return mask


def _relations(c: _Cond, mask: int, named: int, purpose: int) -> int:
    if c.named is not None:
        mask = mask & named if c.named else mask & ~named
    if c.declares is not None:
        mask = mask & purpose if c.declares else mask & ~purpose
    return mask


class Outcome:
    """One notice decided for every indexed agency and section; explained on demand."""

    __slots__ = (
        "_allowed_cache",
        "_caveats",
        "_memo",
        "_obliges",
        "_personal",
        "_sections",
        "allowed",
        "engine",
        "facts",
        "forbids",
        "holds",
        "idx",
        "masks",
        "now_ms",
        "permits",
    )

    def __init__(
        self,
        engine: Engine,
        facts: NoticeFacts,
        idx: RegistryIndex,
        now_ms: int,
        allowed: tuple[int, ...],
        forbids: tuple[tuple[tuple[CompiledRule, int], ...], ...],
        permits: tuple[tuple[tuple[CompiledRule, int], ...], ...],
        holds: tuple[tuple[tuple[CompiledRule, int], ...], ...],
        masks: tuple[int, int, int, int],
    ) -> None:
        self.engine = engine
        self.facts = facts
        self.idx = idx
        self.now_ms = now_ms
        self.allowed = allowed
        self.forbids = forbids
        self.permits = permits
        self.holds = holds
        self.masks = masks
        self._obliges: list[tuple[tuple[CompiledRule, int], ...] | None] = [None] * len(allowed)
        self._allowed_cache: dict[tuple[bool, ...], frozenset[str]] = {}
        self._memo: list[
            dict[tuple[int, ...], tuple[dict[str, object], tuple[CompiledRule, ...]]]
        ] = [{} for _ in allowed]
        self._sections: list[tuple[list[tuple[int, int]], int] | None] = [None] * len(allowed)
        self._personal: dict[tuple[int, tuple[int, ...], str], tuple[Obligation, ...]] = {}
        self._caveats = "; ".join(facts.caveats) or "(no conditions given)"

    @property
    def decision_count(self) -> int:
        return len(self.allowed) * len(self.idx.ids)

    def allowed_sections(self, pos: int) -> frozenset[str]:
        key = tuple(bool(m >> pos & 1) for m in self.allowed)
        got = self._allowed_cache.get(key)
        if got is None:
            got = frozenset(s for s, yes in zip(self.facts.sections, key, strict=True) if yes)
            self._allowed_cache[key] = got
        return got

    def explain(self, pos: int) -> tuple[Decision, ...]:
        """Every section decision for the agency at `pos`, with rules, reasons, obligations.

        Recipients that the same rules match share one explanation (memoised per
        section), so explaining a whole audience costs little more than listing it.
        """
        profile = self.idx.profiles[pos]
        rid = profile.id
        bit = 1 << pos
        denied, listed, _named, _purpose = self.masks
        if profile.status != "active" or denied & bit or not listed & bit:
            if profile.status != "active":
                rule, why = GATE_STATUS, f"{rid} is {profile.status}: it receives nothing"
            elif denied & bit:
                rule, why = GATE_DENY, "excluded by the originator's restrictions"
            else:
                rule, why = GATE_ALLOW, "not in the originator's allow list"
            return tuple(Decision(rid, s, False, (rule,), why) for s in self.facts.sections)
        out = []
        for j, section in enumerate(self.facts.sections):
            personal = False
            if self.allowed[j] & bit:
                rules, personal_mask = self._section_rules(j, section)
                key = tuple([no for no, m in rules if m & bit])
                personal = bool(personal_mask & bit)
            else:
                key = tuple([-1 - r.no for r, m in self.forbids[j] if m & bit])
            memo = self._memo[j]
            got = memo.get(key)
            if got is None:
                got = self._template(j, section, bit)
                memo[key] = got
            template, obliges = got
            d = template.copy()
            d["recipient"] = rid
            if personal:
                org = profile.organisation_name
                mine = self._personal.get((j, key, org))
                if mine is None:
                    mine = self._obligations(obliges, org)
                    self._personal[(j, key, org)] = mine
                d["obligations"] = mine
            out.append(_decision_from(d))
        return tuple(out)

    def _section_rules(self, j: int, section: str) -> tuple[list[tuple[int, int]], int]:
        """The (rule number, mask) of every permit, hold and oblige rule matched in section j,
        and the mask of recipients an obligation names personally."""
        got = self._sections[j]
        if got is None:
            obliges = self._oblige_masks(j, section)
            rules = [(r.no, m) for r, m in (*self.permits[j], *self.holds[j], *obliges)]
            personal = _or(m for r, m in obliges if r.personal)
            got = (rules, personal)
            self._sections[j] = got
        return got

    def _template(
        self, j: int, section: str, bit: int
    ) -> tuple[dict[str, object], tuple[CompiledRule, ...]]:
        """The Decision fields shared by every recipient with this rule signature, and the
        oblige rules (whose texts may still name the recipient's organisation)."""
        if not self.allowed[j] & bit:
            forbids = tuple(r for r, m in self.forbids[j] if m & bit)
            if forbids:
                rules, reason = tuple(r.id for r in forbids), forbids[0].reason
            else:
                rules, reason = (DEFAULT_DENY,), _DEFAULT_REASON
            return _fields(section, False, rules, reason, (), 0), ()
        permits = tuple(r for r, m in self.permits[j] if m & bit)
        holds = tuple(r for r, m in self.holds[j] if m & bit)
        obliges = tuple(r for r, m in self._oblige_masks(j, section) if m & bit)
        rules, reason, obligations, after = self._allowed_explanation(permits, holds, obliges, "")
        return _fields(section, True, rules, reason, obligations, after), obliges

    def _allowed_explanation(
        self,
        permits: tuple[CompiledRule, ...],
        holds: tuple[CompiledRule, ...],
        obliges: tuple[CompiledRule, ...],
        organisation: str,
    ) -> tuple[tuple[str, ...], str, tuple[Obligation, ...], int]:
        rules = tuple(r.id for r in permits) + tuple(r.id for r in holds)
        reason = permits[0].reason
        after = 0
        if holds:
            after = self.facts.restrictions.embargo_until_ms
            reason += f"; held until the embargo ends at {after} ms: {holds[0].reason}"
        return rules, reason, self._obligations(obliges, organisation), after

    def _obligations(
        self, obliges: tuple[CompiledRule, ...], organisation: str
    ) -> tuple[Obligation, ...]:
        facts = self.facts
        caveats = self._caveats
        key = (facts.kind, tuple(r.no for r in obliges), organisation, caveats)
        cache = self.engine.obligation_cache
        got = cache.get(key)
        if got is not None:
            return got
        out = []
        spec = self.engine.kinds.get(facts.kind)
        retention: tuple[int, str, str] | None = None
        if spec is not None:
            retention = (
                spec.retention_days,
                CATALOGUE_RETENTION,
                f"keep at most {spec.retention_days} days ({spec.name}), then erase",
            )
        for rule in obliges:
            s = rule.spec
            text = s.text.format(organisation=organisation, caveats=caveats, days=s.days)
            if s.obligation == "max_retention_days":
                if retention is None or s.days < retention[0]:
                    retention = (s.days, rule.id, text)
                continue
            out.append(Obligation(s.obligation, text, rule.id))
        if retention is not None:
            out.append(Obligation("max_retention_days", retention[2], retention[1], retention[0]))
        got = tuple(out)
        _put(cache, key, got, _OBLIGATION_CACHE)
        return got

    def _oblige_masks(self, j: int, section: str) -> tuple[tuple[CompiledRule, int], ...]:
        matched = self._obliges[j]
        if matched is None:
            matched = self._match_obliges(j, section)
            self._obliges[j] = matched
        return matched

    def _match_obliges(self, j: int, section: str) -> tuple[tuple[CompiledRule, int], ...]:
        facts = self.facts
        kind = facts.kind
        plan = self.engine.plans.get((kind, section))
        if plan is None:
            return ()
        _denied, _listed, named, purpose = self.masks
        values = (
            facts.tlp,
            facts.purpose,
            facts.evaluation_code,
            facts.data_subject,
            facts.originator,
        )
        handling = facts.handling
        embargoed = facts.restrictions.embargo_until_ms > self.now_ms
        args = (values, handling, embargoed, kind, section, named, purpose)
        matched = _match(plan.obliges, self.idx.when_masks, self.idx.unless_masks, args)[1]
        return tuple((rule, m) for rule, m in matched if m & self.allowed[j])
