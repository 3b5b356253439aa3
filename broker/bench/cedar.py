"""Translate a policy bundle, a registry and notices into Cedar (for tests and the benchmark).

Cedar is the oracle: the differential tests check that the compiled engine and
Cedar (through cedarpy) agree on random bundles and requests, and the
benchmark compares their speed. Cedar never runs in the broker.

The translation is deliberately direct and independent of the engine's
compilation: every rule becomes one Cedar policy whose conditions Cedar
evaluates itself (group membership, relations to the originator's
restrictions, the embargo clock).

    principal  Agency::"<id>"   attrs id, country, roles, groups, purposes, status
    action     Action::"read"
    resource   Section::"<section>", added per notice with attrs kind, section, tlp,
               purpose, handling, evaluation, data_subject, originator, embargo_until,
               now, allow_/deny_ agencies/countries/groups
    entities   Group::"<name>"  attrs countries, agencies

The notice's attributes sit on the resource rather than in each request's
context: cedarpy parses a context for every request, an entity once per notice.

The engine's gates become forbid policies with ids registry.status,
originator.deny and originator.allow; permit and forbid rules keep their ids.
Hold and oblige rules go into a second policy set (as permits) that says which
of them apply to an allowed section.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.core.policy import AgencyProfile, Bundle, NoticeFacts
from broker.core.policy.engine import GATE_ALLOW, GATE_DENY, GATE_STATUS
from broker.core.policy.source import Condition, GroupSpec, RuleSpec

GATES = (GATE_STATUS, GATE_DENY, GATE_ALLOW)


def _s(value: str) -> str:
    return json.dumps(value)


def _set(values: Iterable[str]) -> str:
    return "[" + ", ".join(_s(v) for v in sorted(values)) + "]"


def _member(group: str) -> str:
    g = f"Group::{_s(group)}"
    return (
        f"({g}.countries.contains(principal.country) || {g}.agencies.contains(principal.id)"
        f" || principal.groups.contains({_s(group)}))"
    )


def _in_listed_groups(field: str, groups: Mapping[str, GroupSpec]) -> str:
    parts = [f"(resource.{field}.contains({_s(g)}) && {_member(g)})" for g in sorted(groups)]
    return "(" + " || ".join(parts) + ")" if parts else "false"


def condition(c: Condition) -> str:
    """One Condition as a Cedar boolean expression."""
    parts = []
    for key, ctx in (
        ("kinds", "kind"),
        ("sections", "section"),
        ("tlp", "tlp"),
        ("purposes", "purpose"),
        ("evaluation", "evaluation"),
        ("data_subjects", "data_subject"),
        ("originator_agencies", "originator"),
    ):
        values = getattr(c, key)
        if values is not None:
            parts.append(f"{_set(values)}.contains(resource.{ctx})")
    if c.handling is not None:
        parts.append(f"resource.handling.containsAny({_set(c.handling)})")
    if c.embargoed is not None:
        test = "resource.embargo_until > resource.now"
        parts.append(test if c.embargoed else f"!({test})")
    if c.recipient_agencies is not None:
        parts.append(f"{_set(c.recipient_agencies)}.contains(principal.id)")
    if c.recipient_countries is not None:
        parts.append(f"{_set(c.recipient_countries)}.contains(principal.country)")
    if c.recipient_roles is not None:
        parts.append(f"principal.roles.containsAny({_set(c.recipient_roles)})")
    if c.recipient_groups is not None:
        parts.append("(" + " || ".join(_member(g) for g in sorted(c.recipient_groups)) + ")")
    if c.recipient_named is not None:
        test = "resource.allow_agencies.contains(principal.id)"
        parts.append(test if c.recipient_named else f"!({test})")
    if c.recipient_declares_purpose is not None:
        test = "principal.purposes.contains(resource.purpose)"
        parts.append(test if c.recipient_declares_purpose else f"!({test})")
    return " && ".join(parts) if parts else "true"


def _policy(rule: RuleSpec, effect: str) -> str:
    text = f"@id({_s(rule.id)})\n{effect} (principal, action, resource)\n"
    text += f"  when {{ {condition(rule.when)} }}"
    for u in rule.unless:
        text += f"\n  unless {{ {condition(u)} }}"
    return text + ";\n"


def gate_policies(groups: Mapping[str, GroupSpec]) -> str:
    allow_listed = (
        "resource.allow_agencies.contains(principal.id)"
        " || resource.allow_countries.contains(principal.country)"
        f" || {_in_listed_groups('allow_groups', groups)}"
    )
    has_allow = (
        "!(resource.allow_agencies.isEmpty() && resource.allow_countries.isEmpty()"
        " && resource.allow_groups.isEmpty())"
    )
    return (
        f"@id({_s(GATE_STATUS)})\nforbid (principal, action, resource)\n"
        '  unless { principal.status == "active" };\n'
        f"@id({_s(GATE_DENY)})\nforbid (principal, action, resource)\n"
        "  when { resource.deny_agencies.contains(principal.id)"
        " || resource.deny_countries.contains(principal.country)"
        f" || {_in_listed_groups('deny_groups', groups)} }};\n"
        f"@id({_s(GATE_ALLOW)})\nforbid (principal, action, resource)\n"
        f"  when {{ {has_allow} && !({allow_listed}) }};\n"
    )


@dataclass(frozen=True)
class CedarBundle:
    """A bundle in Cedar: the decision policies and the obligation/hold policies."""

    decision_policies: str
    extra_policies: str
    groups: Mapping[str, GroupSpec]
    effects: Mapping[str, str]  # rule id -> effect


def translate(bundle: Bundle) -> CedarBundle:
    decision = [gate_policies(bundle.groups)]
    extra = []
    for rule in bundle.rules:
        if rule.effect in ("permit", "forbid"):
            decision.append(_policy(rule, rule.effect))
        else:
            extra.append(_policy(rule, "permit"))
    return CedarBundle(
        "\n".join(decision),
        "\n".join(extra),
        bundle.groups,
        {r.id: r.effect for r in bundle.rules},
    )


def entities(groups: Mapping[str, GroupSpec], profiles: Iterable[AgencyProfile]) -> list[Any]:
    out: list[Any] = [
        {
            "uid": {"type": "Group", "id": g.name},
            "attrs": {"countries": sorted(g.countries), "agencies": sorted(g.agencies)},
            "parents": [],
        }
        for g in groups.values()
    ]
    for p in profiles:
        out.append(
            {
                "uid": {"type": "Agency", "id": p.id},
                "attrs": {
                    "id": p.id,
                    "country": p.country,
                    "roles": sorted(p.roles),
                    "groups": sorted(p.groups),
                    "purposes": sorted(p.purposes),
                    "status": p.status,
                },
                "parents": [],
            }
        )
    return out


def section_attrs(facts: NoticeFacts, section: str, now_ms: int) -> dict[str, Any]:
    r = facts.restrictions
    return {
        "kind": facts.kind,
        "section": section,
        "tlp": facts.tlp,
        "purpose": facts.purpose,
        "handling": sorted({c.split(":", 1)[0].strip() for c in facts.handling_codes}),
        "evaluation": "".join(facts.evaluation) if all(facts.evaluation) else "",
        "data_subject": facts.data_subject,
        "originator": facts.originator,
        "embargo_until": r.embargo_until_ms,
        "now": now_ms,
        "allow_agencies": sorted(r.allow_agencies),
        "deny_agencies": sorted(r.deny_agencies),
        "allow_countries": sorted(r.allow_countries),
        "deny_countries": sorted(r.deny_countries),
        "allow_groups": sorted(r.allow_groups),
        "deny_groups": sorted(r.deny_groups),
    }


def notice_entities(facts: NoticeFacts, now_ms: int) -> list[Any]:
    """The notice's sections as resource entities."""
    return [
        {
            "uid": {"type": "Section", "id": s},
            "attrs": section_attrs(facts, s, now_ms),
            "parents": [],
        }
        for s in facts.sections
    ]


def requests(facts: NoticeFacts, recipients: Sequence[AgencyProfile]) -> list[dict[str, Any]]:
    """One request per (recipient, section), recipients outer, sections inner."""
    return [
        {
            "principal": f"Agency::{_s(p.id)}",
            "action": 'Action::"read"',
            "resource": f"Section::{_s(s)}",
            "context": {},
        }
        for p in recipients
        for s in facts.sections
    ]


@dataclass(frozen=True)
class CedarDecision:
    allowed: bool
    reasons: frozenset[str]  # rule ids (Cedar's determining policies)
    errors: tuple[str, ...]


class CedarOracle:
    """cedarpy with parsed policy sets and entities, ready for batch calls."""

    def __init__(self, bundle: Bundle, profiles: Iterable[AgencyProfile]) -> None:
        import cedarpy

        self._cedarpy = cedarpy
        self.translated = translate(bundle)
        self.profiles = tuple(profiles)
        self._decision = cedarpy.PolicySet.from_str(self.translated.decision_policies)
        self._extra = (
            cedarpy.PolicySet.from_str(self.translated.extra_policies)
            if self.translated.extra_policies
            else None
        )
        self._entities = cedarpy.Entities.from_json_str(
            json.dumps(entities(bundle.groups, self.profiles))
        )

    def decide_notice(
        self, facts: NoticeFacts, recipients: Sequence[AgencyProfile], now_ms: int
    ) -> list[Any]:
        """Raw cedarpy results for every (recipient, section) of one notice (what the
        benchmark times): the notice's entities added to the registry's, one batch call."""
        ents = self._entities.with_added_json_str(json.dumps(notice_entities(facts, now_ms)))
        results: list[Any] = self._cedarpy.is_authorized_batch(
            requests(facts, recipients), self._decision, ents
        )
        return results

    def decide(
        self, facts: NoticeFacts, recipients: Sequence[AgencyProfile], now_ms: int
    ) -> list[CedarDecision]:
        return [_decision(r) for r in self.decide_notice(facts, recipients, now_ms)]

    def applicable_extras(
        self, facts: NoticeFacts, recipients: Sequence[AgencyProfile], now_ms: int
    ) -> list[frozenset[str]]:
        """For each (recipient, section), the ids of the hold and oblige rules that apply."""
        reqs = requests(facts, recipients)
        if self._extra is None:
            return [frozenset() for _ in reqs]
        ents = self._entities.with_added_json_str(json.dumps(notice_entities(facts, now_ms)))
        results = self._cedarpy.is_authorized_batch(reqs, self._extra, ents)
        return [_decision(r).reasons for r in results]


def _decision(result: Any) -> CedarDecision:
    diag = result.diagnostics
    names = diag.id_annotations_by_reason
    return CedarDecision(
        bool(result.allowed),
        frozenset(names.get(r, r) for r in diag.reasons),
        tuple(str(e) for e in diag.errors),
    )
