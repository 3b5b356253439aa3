"""What a bundle's files say, as values (pure): groups, conditions, rules, the catalogue.

Frozen dataclasses built by the parsers and compiled by the engine: a
:class:`Condition` is a conjunction of optional tests (None: any), a
:class:`RuleSpec` one rule as written, with its file and line; ``_Ctx`` holds what
rules may name while a bundle's rule files are read (:func:`new_context`). Part
of :mod:`broker.core.policy.source`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from broker.core.policy.labels import Labels
from broker.core.policy.lookups import LookupSpec
from broker.core.policy.model import KindSpec
from broker.core.policy.requestkinds import RequestSpec


@dataclass(frozen=True)
class GroupSpec:
    """A named group: members by country code, by agency id, or by the registry's word."""

    name: str
    title: str
    countries: frozenset[str]
    agencies: frozenset[str]


@dataclass(frozen=True)
class Condition:
    """A conjunction of tests on one (notice, recipient, section); None means "any".

    Notice side: kinds, sections, tlp, purposes, handling (any of the codes),
    evaluation (codes such as "X4"), data_subjects, originator_agencies,
    embargoed. Recipient side: recipient_agencies, recipient_countries,
    recipient_groups (any of), recipient_roles (any of), and two relations:
    recipient_named (the originator named it in allow_agencies) and
    recipient_declares_purpose (its declared purposes cover the notice's).
    """

    kinds: frozenset[str] | None = None
    sections: frozenset[str] | None = None
    tlp: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    handling: frozenset[str] | None = None
    evaluation: frozenset[str] | None = None
    data_subjects: frozenset[str] | None = None
    originator_agencies: frozenset[str] | None = None
    embargoed: bool | None = None
    recipient_agencies: frozenset[str] | None = None
    recipient_countries: frozenset[str] | None = None
    recipient_groups: frozenset[str] | None = None
    recipient_roles: frozenset[str] | None = None
    recipient_named: bool | None = None
    recipient_declares_purpose: bool | None = None

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    @property
    def names_recipient(self) -> bool:
        return any(
            getattr(self, k) is not None
            for k in (
                "recipient_agencies",
                "recipient_countries",
                "recipient_groups",
                "recipient_roles",
                "recipient_named",
            )
        )


CONDITION_KEYS = tuple(f.name for f in fields(Condition))
_BOOL_KEYS = ("embargoed", "recipient_named", "recipient_declares_purpose")


@dataclass(frozen=True)
class RuleSpec:
    """One rule as written: applies when `when` holds and none of `unless` does."""

    id: str
    effect: str  # permit | forbid | hold | oblige
    description: str
    reason: str
    when: Condition
    unless: tuple[Condition, ...] = ()
    obligation: str = ""  # for oblige: one of OBLIGATION_KINDS
    text: str = ""  # for oblige: what the recipient is shown (a template)
    days: int = 0  # for oblige max_retention_days
    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class Catalogue:
    kinds: Mapping[str, KindSpec]
    sections: Mapping[str, str]
    purposes: Mapping[str, str]
    authorities: Mapping[str, str]
    lookups: Mapping[str, LookupSpec] = field(default_factory=dict)  # + lookups, by kind
    requests: Mapping[str, RequestSpec] = field(default_factory=dict)  # + judicial, by kind
    labels: Labels = field(default_factory=Labels)  # + judicial: en, fr, es, ar


@dataclass
class _Ctx:
    """What a rule may refer to, for validation."""

    catalogue: Catalogue
    groups: Mapping[str, GroupSpec]
    seen_ids: dict[str, str] = field(default_factory=dict)


def new_context(catalogue: Catalogue, groups: Mapping[str, GroupSpec]) -> _Ctx:
    return _Ctx(catalogue, groups)
