"""Policy bundles: TOML files compiled once into fast checks.

A bundle is a mapping of relative path -> file bytes (the shell reads the
directory; this module never touches the file system). Its version is the
SHA-256 of its canonical bytes, so the same bundle and inputs always give the
same decision and an auditor can name the bundle that was in force.

Layout: ``catalogue.toml`` (purposes, sections, authority types, notice
kinds), ``groups.toml`` (named groups of countries and agencies) and
``rules/*.toml`` (permit, forbid, hold and oblige rules). Files other than
TOML (a README) are hashed into the version but not compiled.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

from broker.core.bounds import quote
from broker.core.countries import COUNTRIES
from broker.core.policy.engine import Engine, Outcome, RegistryIndex
from broker.core.policy.model import (
    EVALUATION_INFORMATION,
    EVALUATION_SOURCES,
    HANDLING_CODES,
    TLP_LEVELS,
    AgencyProfile,
    KindSpec,
    NoticeFacts,
    RecipientDecision,
)
from broker.core.policy.source import (
    Catalogue,
    GroupSpec,
    PolicyError,
    RuleSpec,
    new_context,
    parse_catalogue,
    parse_groups,
    parse_rules,
)

__all__ = ["Bundle", "PolicyError", "bundle_version", "compile_bundle"]

HOUR_MS = 3_600_000


def bundle_version(files: Mapping[str, bytes]) -> str:
    """Return the hex SHA-256 of the bundle's canonical bytes (sorted paths, length-prefixed)."""
    h = hashlib.sha256(b"broker.v1 policy bundle\x00")
    for path in sorted(files):
        name = path.encode()
        h.update(struct.pack(">I", len(name)) + name)
        h.update(struct.pack(">Q", len(files[path])) + files[path])
    return h.hexdigest()


class Bundle:
    """A compiled policy bundle. Build with :func:`compile_bundle`."""

    def __init__(
        self,
        version: str,
        catalogue: Catalogue,
        groups: Mapping[str, GroupSpec],
        rules: tuple[RuleSpec, ...],
    ) -> None:
        self.version = version
        self.catalogue = catalogue
        self.kinds: dict[str, KindSpec] = dict(catalogue.kinds)
        self.groups: dict[str, GroupSpec] = dict(groups)
        self.rules = rules
        self._engine = Engine(self.kinds, self.groups, rules)

    # -- registry ---------------------------------------------------------------------
    def index(self, registry: Iterable[AgencyProfile] | RegistryIndex) -> RegistryIndex:
        """Index a registry for this bundle (cached by contents); pass it to audience()."""
        if isinstance(registry, RegistryIndex):
            return registry
        return self._engine.index(tuple(registry))

    def in_group(self, agency: AgencyProfile, group: str) -> bool:
        """True when the agency belongs to `group` (by id, country or registry membership)."""
        g = self.groups.get(group)
        if g is None:
            return False  # an unknown group never means "everyone"
        return agency.id in g.agencies or agency.country in g.countries or group in agency.groups

    # -- notices ----------------------------------------------------------------------
    def check_notice(self, notice: NoticeFacts) -> KindSpec:
        """Return the kind's catalogue entry; raise PolicyError if the notice does not fit it."""
        spec = self.kinds.get(notice.kind)
        if spec is None:
            raise PolicyError(
                f"unknown notice kind {quote(notice.kind)}: "
                f"use one of {', '.join(sorted(self.kinds))}"
            )
        if notice.tlp not in TLP_LEVELS:
            raise PolicyError(
                f"unknown TLP {quote(notice.tlp)}: use one of {', '.join(TLP_LEVELS)}"
            )
        if notice.purpose not in spec.purposes:
            raise PolicyError(
                f"purpose {quote(notice.purpose)} is not allowed for {notice.kind}: "
                f"use one of {', '.join(spec.purposes)}"
            )
        if len(set(notice.sections)) != len(notice.sections):
            raise PolicyError("section names must be unique")
        extra = sorted(set(notice.sections) - set(spec.sections))
        if extra:
            raise PolicyError(
                f"{notice.kind} carries no section {', '.join(extra)}: "
                f"its sections are {', '.join(spec.sections)}"
            )
        missing = sorted(set(spec.required_sections) - set(notice.sections))
        if missing:
            raise PolicyError(f"{notice.kind} requires section(s) {', '.join(missing)}")
        self._check_header(notice, spec)
        self._check_restrictions(notice, spec)
        return spec

    def _check_header(self, notice: NoticeFacts, spec: KindSpec) -> None:
        required = spec.required_header_fields
        if notice.data_subject:
            if notice.data_subject not in spec.data_subjects:
                raise PolicyError(
                    f"data subject {quote(notice.data_subject)} does not fit {notice.kind}: "
                    f"use one of {', '.join(spec.data_subjects)}"
                )
        elif "data_subject" in required:
            raise PolicyError(
                f"{notice.kind} needs a data subject category ({', '.join(spec.data_subjects)})"
            )
        source, info = notice.evaluation
        if source or info:
            if source not in EVALUATION_SOURCES or info not in EVALUATION_INFORMATION:
                raise PolicyError(
                    f"evaluation {quote(source)}/{quote(info)} is not valid: source is one of "
                    f"{'/'.join(EVALUATION_SOURCES)} and information one of "
                    f"{'/'.join(EVALUATION_INFORMATION)} (there is no D)"
                )
        elif "evaluation" in required:
            raise PolicyError(f"{notice.kind} needs an evaluation (source A/B/C/X, info 1-4)")
        for code in notice.handling_codes:
            name, _, text = code.partition(":")
            name = name.strip()
            if name not in HANDLING_CODES:
                raise PolicyError(
                    f"unknown handling code {quote(code)}: use H0, H1, H2 or 'H3:<conditions>'"
                )
            if name == "H3" and not text.strip():
                raise PolicyError("handling code H3 needs its conditions: write 'H3:<conditions>'")
            if name != "H3" and ":" in code:
                raise PolicyError(f"handling code {name} takes no text ({quote(code)})")
        if not notice.handling_codes and "handling_codes" in required:
            raise PolicyError(f"{notice.kind} needs at least one handling code (H0-H3)")

    def _check_restrictions(self, notice: NoticeFacts, spec: KindSpec) -> None:
        r = notice.restrictions
        for where, codes in (
            ("allow_countries", r.allow_countries),
            ("deny_countries", r.deny_countries),
        ):
            unknown = sorted(c for c in codes if c not in COUNTRIES)
            if unknown:
                raise PolicyError(
                    f"restrictions.{where} names unknown country code(s) "
                    f"{', '.join(quote(c) for c in unknown[:5])}: use ISO 3166-1 alpha-2 codes "
                    "such as FR or DE (EU for EU-level bodies)"
                )
        for where, names in (("allow_groups", r.allow_groups), ("deny_groups", r.deny_groups)):
            unknown = sorted(set(names) - set(self.groups))
            if unknown:
                raise PolicyError(
                    f"restrictions.{where} names unknown group(s) {', '.join(unknown)}: "
                    f"use {', '.join(sorted(self.groups))}"
                )
        if notice.tlp == "RED" and not r.allow_agencies:
            raise PolicyError(
                "TLP:RED goes only to recipients the originator names: "
                "list them in restrictions.allow_agencies"
            )
        if r.embargo_until_ms < 0:
            raise PolicyError("restrictions.embargo_until_ms must not be negative")
        if r.embargo_until_ms:
            if not spec.embargo_max_hours:
                raise PolicyError(f"{notice.kind} takes no embargo; remove embargo_until_ms")
            limit = spec.embargo_max_hours * HOUR_MS
            if notice.created_at_ms and r.embargo_until_ms - notice.created_at_ms > limit:
                raise PolicyError(
                    f"an embargo on {notice.kind} lasts at most {spec.embargo_max_hours} hours "
                    "after creation; set an earlier embargo_until_ms"
                )

    def evaluate(
        self,
        notice: NoticeFacts,
        registry: Iterable[AgencyProfile] | RegistryIndex,
        *,
        now_ms: int = 0,
    ) -> Outcome:
        """Decide every (agency, section) at once; the masks behind audience() and decide()."""
        return self._engine.evaluate(notice, self.index(registry), now_ms)

    def decide(
        self, notice: NoticeFacts, recipient: AgencyProfile, *, now_ms: int = 0
    ) -> RecipientDecision:
        """Return the decision for every section of `notice` for `recipient`.

        `now_ms` is the broker's clock: an embargo is in force while
        restrictions.embargo_until_ms > now_ms (with the default 0, any embargo is).
        """
        outcome = self._engine.evaluate(notice, self._engine.single(recipient), now_ms)
        return RecipientDecision.lazy(recipient.id, outcome, 0)

    def audience(
        self,
        notice: NoticeFacts,
        registry: Iterable[AgencyProfile] | RegistryIndex,
        *,
        now_ms: int = 0,
    ) -> list[RecipientDecision]:
        """Return one decision per registered agency other than the originator, sorted by id."""
        idx = self.index(registry)
        outcome = self._engine.evaluate(notice, idx, now_ms)
        skip = idx.pos.get(notice.originator, -1)
        lazy = RecipientDecision.lazy
        return [lazy(rid, outcome, i) for i, rid in enumerate(idx.ids) if i != skip]


def compile_bundle(files: Mapping[str, bytes]) -> Bundle:
    """Parse and compile a bundle; raise PolicyError naming file:line:column and what to fix."""
    if "catalogue.toml" not in files:
        raise PolicyError("bundle has no catalogue.toml")
    toml = sorted(p for p in files if p.endswith(".toml"))
    stray = [
        p
        for p in toml
        if p not in ("catalogue.toml", "groups.toml")
        and not (p.startswith("rules/") and p.count("/") == 1)
    ]
    if stray:
        raise PolicyError(
            "unexpected file: a bundle holds catalogue.toml, groups.toml and rules/*.toml",
            file=stray[0],
        )
    catalogue = parse_catalogue("catalogue.toml", files["catalogue.toml"])
    groups = parse_groups("groups.toml", files["groups.toml"]) if "groups.toml" in files else {}
    rule_files = [p for p in toml if p.startswith("rules/")]
    if not rule_files:
        raise PolicyError("bundle has no rules/*.toml: with default deny nothing would flow")
    ctx = new_context(catalogue, groups)
    rules: list[RuleSpec] = []
    for path in rule_files:
        rules.extend(parse_rules(path, files[path], ctx))
    return Bundle(bundle_version(files), catalogue, groups, tuple(rules))
