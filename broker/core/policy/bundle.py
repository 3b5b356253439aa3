"""Policy bundles: TOML files compiled once into fast checks.

A bundle is a mapping of relative path -> file bytes (the shell reads the
directory; this module never touches the file system). Its version is the
SHA-256 of its canonical bytes, so the same bundle and inputs always give the
same decision and an auditor can name the bundle that was in force.

Layout: ``catalogue.toml`` (notice kinds), ``groups.toml`` (named groups of
countries and agencies) and ``rules/*.toml`` (permit and forbid rules).
"""

from __future__ import annotations

import hashlib
import struct
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.core.policy.model import (
    AgencyProfile,
    Decision,
    KindSpec,
    NoticeFacts,
    RecipientDecision,
)
from broker.errors import InvalidArgument

TLP_LEVELS = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
_RULE_KEYS = {
    "id",
    "effect",
    "description",
    "reason",
    "kinds",
    "sections",
    "recipient_groups",
    "recipient_roles",
    "recipient_countries",
    "recipient_agencies",
    "tlp",
}


class PolicyError(InvalidArgument):
    """The bundle is malformed, or a notice does not fit the catalogue."""


def bundle_version(files: Mapping[str, bytes]) -> str:
    """Return the hex SHA-256 of the bundle's canonical bytes (sorted paths, length-prefixed)."""
    h = hashlib.sha256(b"broker.v1 policy bundle\x00")
    for path in sorted(files):
        name = path.encode()
        h.update(struct.pack(">I", len(name)) + name)
        h.update(struct.pack(">Q", len(files[path])) + files[path])
    return h.hexdigest()


Matcher = Callable[[NoticeFacts, AgencyProfile, str], bool]


@dataclass(frozen=True)
class Rule:
    id: str
    effect: str  # "permit" | "forbid"
    reason: str
    matches: Matcher


@dataclass(frozen=True)
class Group:
    name: str
    countries: frozenset[str]
    agencies: frozenset[str]


class Bundle:
    """A compiled policy bundle. Build with :func:`compile_bundle`."""

    def __init__(
        self,
        version: str,
        kinds: Mapping[str, KindSpec],
        groups: Mapping[str, Group],
        rules: tuple[Rule, ...],
    ) -> None:
        self.version = version
        self.kinds = dict(kinds)
        self.groups = dict(groups)
        self._permits = tuple(r for r in rules if r.effect == "permit")
        self._forbids = tuple(r for r in rules if r.effect == "forbid")

    def in_group(self, agency: AgencyProfile, group: str) -> bool:
        """True when the agency belongs to `group` (by id, country or registry membership)."""
        g = self.groups.get(group)
        if g is None:
            return False  # an unknown group never means "everyone"
        return agency.id in g.agencies or agency.country in g.countries or group in agency.groups

    def check_notice(self, notice: NoticeFacts) -> KindSpec:
        """Return the kind's catalogue entry; raise PolicyError if the notice does not fit it."""
        spec = self.kinds.get(notice.kind)
        if spec is None:
            raise PolicyError(f"unknown notice kind {notice.kind!r}: see the catalogue")
        if notice.tlp not in TLP_LEVELS:
            raise PolicyError(f"unknown TLP {notice.tlp!r}: use one of {', '.join(TLP_LEVELS)}")
        if spec.purposes and notice.purpose not in spec.purposes:
            raise PolicyError(
                f"purpose {notice.purpose!r} is not allowed for {notice.kind}: "
                f"use one of {', '.join(spec.purposes)}"
            )
        extra = sorted(set(notice.sections) - set(spec.sections))
        if extra:
            raise PolicyError(f"{notice.kind} carries no section {', '.join(extra)}")
        missing = sorted(set(spec.required_sections) - set(notice.sections))
        if missing:
            raise PolicyError(f"{notice.kind} requires section(s) {', '.join(missing)}")
        return spec

    def decide(self, notice: NoticeFacts, recipient: AgencyProfile) -> RecipientDecision:
        """Return the decision for every section of `notice` for `recipient`."""
        gate = self._gate(notice, recipient)
        decisions = []
        for section in notice.sections:
            if gate is not None:
                rule, reason = gate
                decisions.append(Decision(recipient.id, section, False, (rule,), reason))
                continue
            forbids = [r for r in self._forbids if r.matches(notice, recipient, section)]
            if forbids:
                decisions.append(
                    Decision(
                        recipient.id,
                        section,
                        False,
                        tuple(r.id for r in forbids),
                        forbids[0].reason,
                    )
                )
                continue
            permits = [r for r in self._permits if r.matches(notice, recipient, section)]
            if permits:
                decisions.append(
                    Decision(
                        recipient.id,
                        section,
                        True,
                        tuple(r.id for r in permits),
                        permits[0].reason,
                    )
                )
            else:
                decisions.append(
                    Decision(recipient.id, section, False, ("default-deny",), "no rule permits it")
                )
        return RecipientDecision(recipient.id, tuple(decisions))

    def audience(
        self, notice: NoticeFacts, registry: Iterable[AgencyProfile]
    ) -> list[RecipientDecision]:
        """Return one decision per registered agency other than the originator, sorted by id."""
        return [
            self.decide(notice, a)
            for a in sorted(registry, key=lambda a: a.id)
            if a.id != notice.originator
        ]

    def _gate(self, notice: NoticeFacts, recipient: AgencyProfile) -> tuple[str, str] | None:
        """Whole-notice refusals that no rule can override: (rule id, reason) or None."""
        if recipient.status != "active":
            return "registry.status", f"agency is {recipient.status}"
        r = notice.restrictions
        in_any = self.in_group
        if (
            recipient.id in r.deny_agencies
            or recipient.country in r.deny_countries
            or any(in_any(recipient, g) for g in r.deny_groups)
        ):
            return "originator.deny", "excluded by the originator's restrictions"
        if r.has_allow_list and not (
            recipient.id in r.allow_agencies
            or recipient.country in r.allow_countries
            or any(in_any(recipient, g) for g in r.allow_groups)
        ):
            return "originator.allow", "not in the originator's allow list"
        if notice.tlp == "RED" and recipient.id not in r.allow_agencies:
            return "tlp.red", "TLP:RED goes only to recipients the originator named"
        return None


def _parse(path: str, data: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: {exc}") from exc


def _strings(path: str, where: str, value: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{path}: {where} must be a list of non-empty strings")
    if not value and not allow_empty:
        raise PolicyError(
            f"{path}: {where} is an empty list, which would match nobody; "
            "remove the key to mean 'any', or name at least one entry"
        )
    return tuple(value)


def _int(path: str, where: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise PolicyError(f"{path}: {where} must be a positive integer")
    return value


def _kinds(path: str, doc: dict[str, Any]) -> dict[str, KindSpec]:
    table = doc.get("kinds")
    if not isinstance(table, dict) or not table:
        raise PolicyError(f"{path}: needs a non-empty [kinds] table")
    kinds = {}
    for name, k in table.items():
        where = f"kinds.{name!r}"
        if not isinstance(k, dict):
            raise PolicyError(f"{path}: {where} must be a table")
        sections = _strings(path, f"{where}.sections", k.get("sections"))
        required = _strings(
            path, f"{where}.required_sections", k.get("required_sections", []), allow_empty=True
        )
        if not set(required) <= set(sections):
            raise PolicyError(f"{path}: {where}.required_sections must be among its sections")
        kinds[name] = KindSpec(
            name=name,
            title=str(k.get("title", name)),
            sections=sections,
            required_sections=required,
            purposes=_strings(path, f"{where}.purposes", k.get("purposes")),
            retention_days=_int(path, f"{where}.retention_days", k.get("retention_days")),
            review_days=_int(path, f"{where}.review_days", k.get("review_days")),
        )
    return kinds


def _groups(path: str, doc: dict[str, Any]) -> dict[str, Group]:
    groups = {}
    for name, g in doc.get("groups", {}).items():
        where = f"groups.{name!r}"
        if not isinstance(g, dict):
            raise PolicyError(f"{path}: {where} must be a table")
        countries = _strings(path, f"{where}.countries", g.get("countries", []), allow_empty=True)
        agencies = _strings(path, f"{where}.agencies", g.get("agencies", []), allow_empty=True)
        if not countries and not agencies:
            raise PolicyError(
                f"{path}: group {name!r} has no members; an empty group never means everyone"
            )
        groups[name] = Group(name, frozenset(countries), frozenset(agencies))
    return groups


def _rule(
    path: str, raw: Any, bundle_groups: Mapping[str, Group], kinds: Mapping[str, KindSpec]
) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: each [[rule]] must be a table")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        raise PolicyError(f"{path}: a rule has no id")
    where = f"rule {rid!r}"
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise PolicyError(f"{path}: {where} has unknown key(s) {', '.join(unknown)}")
    effect = raw.get("effect")
    if effect not in ("permit", "forbid"):
        raise PolicyError(f"{path}: {where} effect must be 'permit' or 'forbid'")

    def opt(key: str) -> frozenset[str] | None:
        return frozenset(_strings(path, f"{where}.{key}", raw[key])) if key in raw else None

    rkinds, sections, groups = opt("kinds"), opt("sections"), opt("recipient_groups")
    roles, countries, agencies = (
        opt("recipient_roles"),
        opt("recipient_countries"),
        opt("recipient_agencies"),
    )
    tlp = opt("tlp")
    for k in sorted(rkinds or ()):
        if k not in kinds:
            raise PolicyError(f"{path}: {where} names unknown kind {k!r}")
    for g in sorted(groups or ()):
        if g not in bundle_groups:
            raise PolicyError(f"{path}: {where} names unknown group {g!r}")
    for t in sorted(tlp or ()):
        if t not in TLP_LEVELS:
            raise PolicyError(f"{path}: {where} names unknown TLP {t!r}")
    member = {name: g for name, g in bundle_groups.items()}

    def matches(n: NoticeFacts, a: AgencyProfile, section: str) -> bool:
        if rkinds is not None and n.kind not in rkinds:
            return False
        if sections is not None and section not in sections:
            return False
        if tlp is not None and n.tlp not in tlp:
            return False
        if agencies is not None and a.id not in agencies:
            return False
        if countries is not None and a.country not in countries:
            return False
        if roles is not None and not (roles & a.roles):
            return False
        if groups is not None:
            return any(
                a.id in member[g].agencies or a.country in member[g].countries or g in a.groups
                for g in groups
            )
        return True

    reason = raw.get("reason", raw.get("description", rid))
    return Rule(rid, effect, str(reason), matches)


def compile_bundle(files: Mapping[str, bytes]) -> Bundle:
    """Parse and compile a bundle; raise PolicyError naming the file and what to fix."""
    if "catalogue.toml" not in files:
        raise PolicyError("bundle has no catalogue.toml")
    kinds = _kinds("catalogue.toml", _parse("catalogue.toml", files["catalogue.toml"]))
    groups = (
        _groups("groups.toml", _parse("groups.toml", files["groups.toml"]))
        if "groups.toml" in files
        else {}
    )
    rules: list[Rule] = []
    seen: set[str] = set()
    rule_files = sorted(p for p in files if p.startswith("rules/") and p.endswith(".toml"))
    if not rule_files:
        raise PolicyError("bundle has no rules/*.toml: with default deny nothing would flow")
    for path in rule_files:
        doc = _parse(path, files[path])
        raw_rules = doc.get("rule", [])
        if not isinstance(raw_rules, list):
            raise PolicyError(f"{path}: use [[rule]] tables")
        for raw in raw_rules:
            rule = _rule(path, raw, groups, kinds)
            if rule.id in seen:
                raise PolicyError(f"{path}: duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            rules.append(rule)
    return Bundle(bundle_version(files), kinds, groups, tuple(rules))
