"""groups.toml read and checked (pure): named groups of countries and agencies.

A group lists ISO 3166-1 alpha-2 codes (or "EU") and agency ids; one with no
member is refused, since an empty group must never mean everyone. Part of
:mod:`broker.core.policy.source`.
"""

from __future__ import annotations

from broker.core.bounds import quote
from broker.core.policy.source.specs import GroupSpec
from broker.core.policy.source.text import _COUNTRY, _ID, _strings, parse_toml


def parse_groups(path: str, data: bytes) -> dict[str, GroupSpec]:
    doc, src = parse_toml(path, data)
    unknown = sorted(set(doc) - {"groups"})
    if unknown:
        raise src.error(f"unknown key {quote(unknown[0])}: use [groups.<name>] tables")
    table = doc.get("groups", {})
    if not isinstance(table, dict):
        raise src.error(
            "groups must be tables: write one [groups.<name>] table per group",
            src.anywhere("groups"),
        )
    groups = {}
    for name, g in table.items():
        start = src.table("groups", name)
        where = f"group {quote(name)}"
        if not _ID.match(name):
            raise src.error(
                f"{where}: use lower-case letters, digits, '_', '-', '.'", src.key(start)
            )
        if not isinstance(g, dict):
            raise src.error(f"{where} must be a table", src.key(start))
        extra = sorted(set(g) - {"title", "countries", "agencies"})
        if extra:
            raise src.error(
                f"{where} has unknown key {quote(extra[0])} (allowed: title, countries, agencies)",
                src.key(start, extra[0]),
            )
        countries = _strings(
            src,
            src.key(start, "countries"),
            f"{where}.countries",
            g.get("countries", []),
            allow_empty=True,
        )
        for c in countries:
            if not _COUNTRY.match(c) and c != "EU":
                raise src.error(
                    f"{where}.countries: {quote(c)} is not an ISO 3166-1 alpha-2 code (e.g. 'FR')",
                    src.key(start, "countries", c),
                )
        agencies = _strings(
            src,
            src.key(start, "agencies"),
            f"{where}.agencies",
            g.get("agencies", []),
            allow_empty=True,
        )
        if not countries and not agencies:
            raise src.error(
                f"{where} has no members; an empty group never means everyone: "
                "list countries or agencies",
                src.key(start),
            )
        groups[name] = GroupSpec(
            name, str(g.get("title", name)), frozenset(countries), frozenset(agencies)
        )
    return groups
