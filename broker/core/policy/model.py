"""Values the policy engine reads and returns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

AGENCY_STATUSES = ("active", "suspended", "revoked")
TLP_LEVELS = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
HANDLING_CODES = ("H0", "H1", "H2", "H3")
EVALUATION_SOURCES = ("A", "B", "C", "X")
EVALUATION_INFORMATION = ("1", "2", "3", "4")
# Law Enforcement Directive (EU) 2016/680 Art. 6, plus "none" for notices about no person.
DATA_SUBJECTS = ("suspect", "convicted", "victim", "witness", "other", "none")
# Header fields a catalogue kind may require (besides its sections).
HEADER_FIELDS = ("data_subject", "evaluation", "handling_codes")
# What an obligation asks of the recipient (see policies/README.md).
OBLIGATION_KINDS = (
    "acknowledge",  # show the text and have a person acknowledge it before use
    "no_onward_transmission",  # no dissemination beyond the recipient without permission
    "organisation_only",  # no sharing outside the recipient's organisation
    "need_to_know",  # within the recipient's organisation and its clients, need-to-know
    "community_only",  # within the community, never through public channels
    "purpose_bound",  # use only for the stated purposes
    "not_evidential",  # not for judicial use without the provider's permission
    "report_hit",  # report a hit to the issuer
    "max_retention_days",  # erase (or review) after `days` days
)


@dataclass(frozen=True)
class AgencyProfile:
    """A registry entry: who an agency is, as the policy sees it.

    `organisation` names the organisation the agency belongs to (several units
    of one police force may share one); empty means the agency is its own
    organisation. It only shapes the text of obligations such as TLP
    AMBER+STRICT's "share only within your organisation".
    """

    id: str
    country: str
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()  # explicit memberships from the registry
    purposes: frozenset[str] = frozenset()
    status: str = "active"
    organisation: str = ""

    @property
    def organisation_name(self) -> str:
        return self.organisation or self.id


@dataclass(frozen=True)
class Restrictions:
    """Originator restrictions: allow and deny lists, and an embargo (seen by the broker only).

    `allow_agencies` also names the recipients of TLP:RED notices and the
    recipients the originator chose by hand (rules may test `recipient_named`).
    `embargo_until_ms` > 0 asks that, until then, the notice reach coordination
    hubs only (SIS Reg. 2018/1862 Art. 26(4)); the shipped bundle holds the
    other deliveries until the embargo ends.
    """

    allow_agencies: frozenset[str] = frozenset()
    deny_agencies: frozenset[str] = frozenset()
    allow_countries: frozenset[str] = frozenset()
    deny_countries: frozenset[str] = frozenset()
    allow_groups: frozenset[str] = frozenset()
    deny_groups: frozenset[str] = frozenset()
    embargo_until_ms: int = 0

    @property
    def has_allow_list(self) -> bool:
        return bool(self.allow_agencies or self.allow_countries or self.allow_groups)


@dataclass(frozen=True)
class NoticeFacts:
    """What the policy may know of a notice: header fields, never section contents.

    `data_subject` is a name from DATA_SUBJECTS ("" when unset); `evaluation`
    is the Europol pair (source, information), e.g. ("B", "2"), or ("", "")
    when the originator gave none; `handling_codes` are "H0".."H2" and
    "H3:<conditions>"; `created_at_ms` (0 when unknown) lets the catalogue
    bound an embargo's length.
    """

    originator: str
    kind: str
    purpose: str
    tlp: str  # CLEAR, GREEN, AMBER, AMBER+STRICT, RED
    sections: tuple[str, ...]
    handling_codes: tuple[str, ...] = ()
    restrictions: Restrictions = field(default_factory=Restrictions)
    data_subject: str = ""
    evaluation: tuple[str, str] = ("", "")
    created_at_ms: int = 0

    @property
    def evaluation_code(self) -> str:
        """The evaluation as one code, e.g. "B2"; "" when not given."""
        source, info = self.evaluation
        return f"{source}{info}" if source and info else ""

    @property
    def handling(self) -> frozenset[str]:
        """The handling codes without their free text: {"H2", "H3"} for ("H2", "H3:x")."""
        return frozenset(c.split(":", 1)[0].strip() for c in self.handling_codes)

    @property
    def caveats(self) -> tuple[str, ...]:
        """The free-text conditions of H3 codes, in order."""
        return tuple(
            c.split(":", 1)[1].strip()
            for c in self.handling_codes
            if c.split(":", 1)[0].strip() == "H3" and ":" in c
        )


@dataclass(frozen=True)
class KindSpec:
    """One catalogue entry: a notice kind with its sections, required fields and time limits.

    `content_fields` maps a section to the fields its (encrypted) content must
    hold; the originator's SDK checks them before sealing, the broker (which cannot
    read sections) the signed content manifest, the recipient's SDK that the manifest
    is true (broker/core/content.py). `embargo_max_hours` is 0 when the kind takes no embargo.
    `suites` are the envelope suite ids the kind requires (empty: any the deployment
    allows; broker/core/policy/kindsuites.py).
    """

    name: str
    title: str
    sections: tuple[str, ...]
    required_sections: tuple[str, ...]
    purposes: tuple[str, ...]
    retention_days: int
    review_days: int
    data_subjects: tuple[str, ...] = DATA_SUBJECTS
    required_header_fields: tuple[str, ...] = ()
    content_fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    embargo_max_hours: int = 0
    suites: tuple[str, ...] = ()  # + post-quantum: envelope suites required (empty: any)


@dataclass(frozen=True)
class Obligation:
    """A condition the recipient must honour, carried with an allowed section.

    `kind` is one of OBLIGATION_KINDS, `text` what to show the recipient,
    `rule` the rule that attached it, `days` the limit for max_retention_days.
    """

    kind: str
    text: str
    rule: str
    days: int = 0


@dataclass(frozen=True)
class Decision:
    """The decision for one (recipient, section): allowed or not, which rules, and why.

    For an allowed section, `obligations` travel to the recipient and
    `deliver_after_ms` > 0 means the broker must hold the delivery until then
    (an embargo); both are empty for a refused section.
    """

    recipient: str
    section: str
    allowed: bool
    rules: tuple[str, ...]
    reason: str
    obligations: tuple[Obligation, ...] = ()
    deliver_after_ms: int = 0


class Outcome(Protocol):
    """What a lazily explained RecipientDecision reads (the engine's per-notice result)."""

    def explain(self, pos: int) -> tuple[Decision, ...]: ...

    def allowed_sections(self, pos: int) -> frozenset[str]: ...


class RecipientDecision:
    """Every section decision for one recipient of one notice.

    The engine builds these lazily: `allowed_sections` and `allowed` come
    straight from the compiled masks, and `decisions` (rules, reasons,
    obligations) are derived from the same masks on first use.
    """

    __slots__ = ("_allowed", "_decisions", "_outcome", "_pos", "recipient")

    def __init__(self, recipient: str, decisions: Iterable[Decision] = ()) -> None:
        self.recipient = recipient
        self._decisions: tuple[Decision, ...] | None = tuple(decisions)
        self._outcome: Outcome | None = None
        self._pos = -1
        self._allowed: frozenset[str] | None = None

    @classmethod
    def lazy(cls, recipient: str, outcome: Outcome, pos: int) -> RecipientDecision:
        rd = cls.__new__(cls)
        rd.recipient = recipient
        rd._decisions = None
        rd._outcome = outcome
        rd._pos = pos
        rd._allowed = None
        return rd

    @property
    def decisions(self) -> tuple[Decision, ...]:
        if self._decisions is None:
            assert self._outcome is not None
            self._decisions = self._outcome.explain(self._pos)
        return self._decisions

    @property
    def allowed_sections(self) -> frozenset[str]:
        if self._allowed is None:
            if self._decisions is None:
                assert self._outcome is not None
                self._allowed = self._outcome.allowed_sections(self._pos)
            else:
                self._allowed = frozenset(d.section for d in self._decisions if d.allowed)
        return self._allowed

    @property
    def allowed(self) -> bool:
        return bool(self.allowed_sections)

    @property
    def deliver_after_ms(self) -> int:
        """When the broker may deliver (0: at once): the latest hold of an allowed section."""
        return max((d.deliver_after_ms for d in self.decisions if d.allowed), default=0)

    @property
    def obligations(self) -> tuple[Obligation, ...]:
        """The obligations of every allowed section, without repeats, in order."""
        seen: dict[Obligation, None] = {}
        for d in self.decisions:
            if d.allowed:
                seen.update(dict.fromkeys(d.obligations))
        return tuple(seen)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecipientDecision):
            return NotImplemented
        return self.recipient == other.recipient and self.decisions == other.decisions

    def __hash__(self) -> int:
        return hash((self.recipient, self.decisions))

    def __repr__(self) -> str:
        return f"RecipientDecision(recipient={self.recipient!r}, decisions={self.decisions!r})"
