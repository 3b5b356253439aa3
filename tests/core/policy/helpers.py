"""Bundles for the policy tests: the shipped one, and small inline ones."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from broker.core.policy import AgencyProfile, Bundle, NoticeFacts, Restrictions, compile_bundle

POLICIES = Path(__file__).resolve().parents[3] / "policies"


def shipped_files() -> dict[str, bytes]:
    return {p.relative_to(POLICIES).as_posix(): p.read_bytes() for p in POLICIES.rglob("*.toml")}


_SHIPPED: list[Bundle] = []


def shipped() -> Bundle:
    if not _SHIPPED:
        _SHIPPED.append(compile_bundle(shipped_files()))
    return _SHIPPED[0]


CATALOGUE = """
[purposes]
p1 = "purpose one"
p2 = "purpose two"
p3 = "purpose three"

[sections]
a = "section a"
b = "section b"
c = "section c"
d = "section d"

[authorities]
police = "police"
border = "border"
registry = "registry"
judicial = "judicial"

[kinds.k1]
sections = ["a", "b", "c"]
purposes = ["p1", "p2"]
retention_days = 100
review_days = 50

[kinds.k2]
sections = ["a", "b", "d"]
required_sections = ["a"]
purposes = ["p2", "p3"]
retention_days = 30
review_days = 20
embargo_max_hours = 48

[kinds."x.k3"]
sections = ["c", "d"]
purposes = ["p1"]
data_subjects = ["suspect", "none"]
required_header_fields = ["data_subject", "evaluation"]
retention_days = 10
review_days = 5
"""

GROUPS = """
[groups.g1]
countries = ["FR", "DE"]

[groups.g2]
agencies = ["HUB"]
"""


def files(
    rules: str | dict[str, str], *, groups: str = GROUPS, catalogue: str = CATALOGUE
) -> dict[str, bytes]:
    rule_files = rules if isinstance(rules, dict) else {"rules/r.toml": rules}
    out = {"catalogue.toml": catalogue.encode(), "groups.toml": groups.encode()}
    out.update({k: v.encode() for k, v in rule_files.items()})
    return out


def bundle(rules: str | dict[str, str], **kw: str) -> Bundle:
    return compile_bundle(files(rules, **kw))


def agency(
    aid: str,
    country: str = "FR",
    roles: Iterable[str] = ("police",),
    *,
    purposes: Iterable[str] = ("p1", "p2", "p3"),
    groups: Iterable[str] = (),
    status: str = "active",
    organisation: str = "",
) -> AgencyProfile:
    return AgencyProfile(
        aid,
        country,
        frozenset(roles),
        frozenset(groups),
        frozenset(purposes),
        status,
        organisation,
    )


def notice(
    kind: str = "k1",
    sections: tuple[str, ...] = ("a", "b", "c"),
    *,
    originator: str = "ORIG",
    purpose: str = "p1",
    tlp: str = "AMBER",
    handling: tuple[str, ...] = (),
    evaluation: tuple[str, str] = ("", ""),
    data_subject: str = "suspect",
    created_at_ms: int = 0,
    **restrictions: object,
) -> NoticeFacts:
    return NoticeFacts(
        originator=originator,
        kind=kind,
        purpose=purpose,
        tlp=tlp,
        sections=sections,
        handling_codes=handling,
        restrictions=Restrictions(**restrictions),  # type: ignore[arg-type]
        data_subject=data_subject,
        evaluation=evaluation,
        created_at_ms=created_at_ms,
    )


def by_section(decision: object) -> dict[str, object]:
    return {d.section: d for d in decision.decisions}  # type: ignore[attr-defined]
