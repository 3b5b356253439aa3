"""Values the policy engine reads and returns."""

from __future__ import annotations

from dataclasses import dataclass, field

AGENCY_STATUSES = ("active", "suspended", "revoked")


@dataclass(frozen=True)
class AgencyProfile:
    """A registry entry: who an agency is, as the policy sees it."""

    id: str
    country: str
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()  # explicit memberships from the registry
    purposes: frozenset[str] = frozenset()
    status: str = "active"


@dataclass(frozen=True)
class Restrictions:
    """Originator restrictions (allow and deny lists of agencies, countries, groups)."""

    allow_agencies: frozenset[str] = frozenset()
    deny_agencies: frozenset[str] = frozenset()
    allow_countries: frozenset[str] = frozenset()
    deny_countries: frozenset[str] = frozenset()
    allow_groups: frozenset[str] = frozenset()
    deny_groups: frozenset[str] = frozenset()

    @property
    def has_allow_list(self) -> bool:
        return bool(self.allow_agencies or self.allow_countries or self.allow_groups)


@dataclass(frozen=True)
class NoticeFacts:
    """What the policy may know of a notice: header fields, never section contents."""

    originator: str
    kind: str
    purpose: str
    tlp: str  # CLEAR, GREEN, AMBER, AMBER+STRICT, RED
    sections: tuple[str, ...]
    handling_codes: tuple[str, ...] = ()
    restrictions: Restrictions = field(default_factory=Restrictions)


@dataclass(frozen=True)
class KindSpec:
    """One catalogue entry: a notice kind with its sections and time limits."""

    name: str
    title: str
    sections: tuple[str, ...]
    required_sections: tuple[str, ...]
    purposes: tuple[str, ...]
    retention_days: int
    review_days: int


@dataclass(frozen=True)
class Decision:
    """The decision for one (recipient, section): allowed or not, which rules, and why."""

    recipient: str
    section: str
    allowed: bool
    rules: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class RecipientDecision:
    """Every section decision for one recipient of one notice."""

    recipient: str
    decisions: tuple[Decision, ...]

    @property
    def allowed_sections(self) -> frozenset[str]:
        return frozenset(d.section for d in self.decisions if d.allowed)

    @property
    def allowed(self) -> bool:
        return any(d.allowed for d in self.decisions)
