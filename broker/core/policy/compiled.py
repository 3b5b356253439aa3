"""The compiled form of a bundle's rules and of a registry (pure): what the engine evaluates.

A :class:`CompiledRule` holds its ``when`` and ``unless`` conditions as ``_Cond``:
the notice-side tests as (position, allowed values) over a notice's attribute
tuple, the recipient side as the sets a registry index turns into masks. A
:class:`RegistryIndex` gives every agency a bit (sorted by id) and holds, per
rule, the mask of the agencies its recipient-side tests match (static masks),
the group, country and purpose masks, and the originator restrictions' masks
(cached). A ``_Plan`` lists the rules that may apply to one (kind, section), by
effect. Used by :mod:`broker.core.policy.engine`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from broker.core.policy.model import AgencyProfile, Restrictions
from broker.core.policy.source import Condition, GroupSpec, RuleSpec

_RESTRICTION_CACHE = 256


# Positions in a notice's attribute tuple (see _notice_values).
_TLP, _PURPOSE, _EVALUATION, _SUBJECT, _ORIGINATOR = range(5)


class _Cond:
    """One compiled Condition: notice-side tests and recipient-side shape."""

    __slots__ = (
        "declares",
        "embargoed",
        "handling",
        "has_notice_tests",
        "kinds",
        "named",
        "recipient",
        "sections",
        "simple",
        "spec",
        "tests",
    )

    def __init__(self, spec: Condition) -> None:
        self.spec = spec
        self.kinds = spec.kinds
        self.sections = spec.sections
        tests = []
        for pos, value in (
            (_TLP, spec.tlp),
            (_PURPOSE, spec.purposes),
            (_EVALUATION, spec.evaluation),
            (_SUBJECT, spec.data_subjects),
            (_ORIGINATOR, spec.originator_agencies),
        ):
            if value is not None:
                tests.append((pos, value))
        self.tests = tuple(tests)
        self.handling = spec.handling
        self.embargoed = spec.embargoed
        self.named = spec.recipient_named
        self.declares = spec.recipient_declares_purpose
        self.recipient = (
            spec.recipient_agencies,
            spec.recipient_countries,
            spec.recipient_roles,
            spec.recipient_groups,
        )
        self.simple = self.named is None and self.declares is None
        self.has_notice_tests = bool(self.tests) or (
            self.handling is not None or self.embargoed is not None
        )

    def notice_ok(self, values: tuple[str, ...], handling: frozenset[str], embargoed: bool) -> bool:
        """Notice-side tests other than kind and section."""
        for pos, allowed in self.tests:
            if values[pos] not in allowed:
                return False
        if self.handling is not None and self.handling.isdisjoint(handling):
            return False
        return self.embargoed is None or self.embargoed == embargoed

    def where_ok(self, kind: str, section: str) -> bool:
        return (self.kinds is None or kind in self.kinds) and (
            self.sections is None or section in self.sections
        )


class CompiledRule:
    """A rule with its compiled conditions; `no` is its position in the bundle."""

    __slots__ = ("effect", "id", "no", "personal", "reason", "simple", "spec", "unless", "when")

    def __init__(self, no: int, spec: RuleSpec) -> None:
        self.no = no
        self.spec = spec
        self.id = spec.id
        self.effect = spec.effect
        self.reason = spec.reason
        self.when = _Cond(spec.when)
        self.unless = tuple(_Cond(u) for u in spec.unless)
        self.simple = self.when.simple and not self.unless
        # An obligation whose text names the recipient's organisation differs per recipient.
        self.personal = "{organisation}" in spec.text


class RegistryIndex:
    """A registry indexed for one bundle: a bit per agency (sorted by id) and static masks.

    Build with Bundle.index(profiles); hold it while the registry is unchanged.
    """

    __slots__ = (
        "_restrictions",
        "active",
        "all",
        "countries",
        "groups",
        "ids",
        "pos",
        "profiles",
        "purposes",
        "unless_masks",
        "when_masks",
    )

    def __init__(
        self,
        profiles: Sequence[AgencyProfile],
        groups: Mapping[str, GroupSpec],
        rules: Sequence[CompiledRule],
    ) -> None:
        self.profiles = tuple(sorted(profiles, key=lambda p: p.id))
        self.ids = tuple(p.id for p in self.profiles)
        self.pos = {pid: i for i, pid in enumerate(self.ids)}
        self.all = (1 << len(self.profiles)) - 1
        countries: dict[str, int] = {}
        roles: dict[str, int] = {}
        purposes: dict[str, int] = {}
        explicit: dict[str, int] = {}
        active = 0
        for i, p in enumerate(self.profiles):
            bit = 1 << i
            countries[p.country] = countries.get(p.country, 0) | bit
            for r in p.roles:
                roles[r] = roles.get(r, 0) | bit
            for u in p.purposes:
                purposes[u] = purposes.get(u, 0) | bit
            for g in p.groups:
                explicit[g] = explicit.get(g, 0) | bit
            if p.status == "active":
                active |= bit
        self.active = active
        self.countries = countries
        self.purposes = purposes
        # Group membership: by agency id, by country, or by the registry's explicit word.
        # Only groups the bundle defines exist: an unknown group has no members.
        self.groups = {
            name: self._agencies(g.agencies)
            | _or(countries.get(c, 0) for c in g.countries)
            | explicit.get(name, 0)
            for name, g in groups.items()
        }
        self._restrictions: dict[Restrictions, tuple[int, int, int]] = {}

        def static(c: _Cond) -> int:
            mask = self.all
            agencies, ctry, rls, grps = c.recipient
            if agencies is not None:
                mask &= self._agencies(agencies)
            if ctry is not None:
                mask &= _or(countries.get(x, 0) for x in ctry)
            if rls is not None:
                mask &= _or(roles.get(x, 0) for x in rls)
            if grps is not None:
                mask &= _or(self.groups.get(x, 0) for x in grps)
            return mask

        self.when_masks = tuple(static(r.when) for r in rules)
        self.unless_masks = tuple(tuple(static(u) for u in r.unless) for r in rules)

    def _agencies(self, ids: frozenset[str]) -> int:
        return _or(1 << self.pos[a] for a in ids if a in self.pos)

    def restriction_masks(self, r: Restrictions) -> tuple[int, int, int]:
        """(denied, allow-listed, named) masks for the originator's restrictions."""
        got = self._restrictions.get(r)
        if got is None:
            groups = self.groups
            denied = (
                self._agencies(r.deny_agencies)
                | _or(self.countries.get(c, 0) for c in r.deny_countries)
                | _or(groups.get(g, 0) for g in r.deny_groups)
            )
            named = self._agencies(r.allow_agencies)
            if r.has_allow_list:
                listed = (
                    named
                    | _or(self.countries.get(c, 0) for c in r.allow_countries)
                    | _or(groups.get(g, 0) for g in r.allow_groups)
                )
            else:
                listed = self.all
            got = (denied, listed, named)
            _put(self._restrictions, r, got, _RESTRICTION_CACHE)
        return got


def _put(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Insert into a bounded cache, dropping the oldest entry when full."""
    if len(cache) >= limit:
        cache.pop(next(iter(cache)))
    cache[key] = value


def _or(masks: object) -> int:
    out = 0
    for m in masks:  # type: ignore[attr-defined]
        out |= m
    return out


class _Plan:
    """The rules that may apply to one (kind, section), by effect, in bundle order."""

    __slots__ = ("forbids", "holds", "obliges", "permits")

    def __init__(self, rules: Sequence[CompiledRule], kind: str, section: str) -> None:
        here = [r for r in rules if r.when.where_ok(kind, section)]
        self.forbids = tuple(r for r in here if r.effect == "forbid")
        self.permits = tuple(r for r in here if r.effect == "permit")
        self.holds = tuple(r for r in here if r.effect == "hold")
        self.obliges = tuple(r for r in here if r.effect == "oblige")
