"""Rule files read and checked (pure): [[rule]] tables to RuleSpecs.

:func:`parse_rules` checks each rule's id (unique across the bundle, none of the
engine's own prefixes), effect, texts and templates, and each condition against
the catalogue and groups in the ``_Ctx`` (kind patterns and evaluation wildcards
expanded); a hold applies only under an embargo and a permit must name whom it
permits. Part of :mod:`broker.core.policy.source`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from broker.core.bounds import quote
from broker.core.policy.model import (
    DATA_SUBJECTS,
    EVALUATION_INFORMATION,
    EVALUATION_SOURCES,
    HANDLING_CODES,
    OBLIGATION_KINDS,
    TLP_LEVELS,
)
from broker.core.policy.source.specs import _BOOL_KEYS, CONDITION_KEYS, Condition, RuleSpec, _Ctx
from broker.core.policy.source.text import (
    _COUNTRY,
    _ID,
    SourceText,
    _positive_int,
    _strings,
    _text,
    parse_toml,
)

EFFECTS = ("permit", "forbid", "hold", "oblige")
# Rule ids the engine uses itself.
RESERVED_PREFIXES = ("registry.", "originator.", "catalogue.", "default-deny")
TEMPLATE_FIELDS = ("organisation", "caveats", "days")


_RULE_META = {"id", "effect", "description", "reason", "unless", "obligation", "text", "days"}


def _expand_kinds(
    src: SourceText, at: tuple[int, int], where: str, names: tuple[str, ...], ctx: _Ctx
) -> frozenset[str]:
    out: set[str] = set()
    for n in names:
        if n.endswith("*"):
            prefix = n[:-1]
            found = {k for k in ctx.catalogue.kinds if k.startswith(prefix)}
            if not found:
                raise src.error(f"{where}: pattern {quote(n)} matches no catalogue kind", at)
            out |= found
        elif n in ctx.catalogue.kinds:
            out.add(n)
        else:
            raise src.error(f"{where} names unknown kind {quote(n)}: see catalogue.toml", at)
    return frozenset(out)


def _expand_evaluation(
    src: SourceText, at: tuple[int, int], where: str, codes: tuple[str, ...]
) -> frozenset[str]:
    out: set[str] = set()
    for c in codes:
        if len(c) != 2 or not (
            (c[0] in EVALUATION_SOURCES or c[0] == "*")
            and (c[1] in EVALUATION_INFORMATION or c[1] == "*")
        ):
            raise src.error(
                f"{where}: {quote(c)} is not an evaluation code: source A/B/C/X then information "
                "1-4, e.g. 'X4'; '*' matches any ('X*', '*4')",
                at,
            )
        sources = EVALUATION_SOURCES if c[0] == "*" else (c[0],)
        infos = EVALUATION_INFORMATION if c[1] == "*" else (c[1],)
        out |= {s + i for s in sources for i in infos}
    return frozenset(out)


Locate = Callable[[str, "str | None"], tuple[int, int]]


def _condition(
    src: SourceText, locate: Locate, where: str, raw: Mapping[str, Any], ctx: _Ctx
) -> Condition:
    values: dict[str, Any] = {}
    cat = ctx.catalogue
    for key in CONDITION_KEYS:
        if key not in raw:
            continue
        value = raw[key]

        def at(needle: str | None = None, _k: str = key) -> tuple[int, int]:
            return locate(_k, needle)

        if key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise src.error(f"{where}.{key} must be true or false", at())
            values[key] = value
            continue
        items = _strings(src, at(), f"{where}.{key}", value)

        def check(allowed: Any, what: str, _items: tuple[str, ...] = items, _k: str = key) -> None:
            for item in _items:
                if item not in allowed:
                    noun, _, hint = what.partition(" (")
                    hint = f" ({hint}" if hint else ""
                    raise src.error(
                        f"{where}.{_k} names unknown {noun} {quote(item)}{hint}", locate(_k, item)
                    )

        if key == "kinds":
            values[key] = _expand_kinds(src, at(), f"{where}.kinds", items, ctx)
            continue
        if key == "evaluation":
            values[key] = _expand_evaluation(src, at(), f"{where}.evaluation", items)
            continue
        if key == "sections":
            check(cat.sections, "section (see [sections] in catalogue.toml)")
        elif key == "tlp":
            check(TLP_LEVELS, f"TLP level (use {', '.join(TLP_LEVELS)})")
        elif key == "purposes":
            check(cat.purposes, "purpose (see [purposes] in catalogue.toml)")
        elif key == "handling":
            check(HANDLING_CODES, f"handling code (use {', '.join(HANDLING_CODES)})")
        elif key == "data_subjects":
            check(DATA_SUBJECTS, f"data subject category (use {', '.join(DATA_SUBJECTS)})")
        elif key == "recipient_groups":
            check(ctx.groups, "group (see groups.toml; an unknown group never means everyone)")
        elif key == "recipient_roles":
            check(cat.authorities, "role (see [authorities] in catalogue.toml)")
        elif key == "recipient_countries":
            for c in items:
                if not _COUNTRY.match(c) and c != "EU":
                    raise src.error(
                        f"{where}.{key}: {quote(c)} is not an ISO 3166-1 alpha-2 code",
                        locate(key, c),
                    )
        values[key] = frozenset(items)
    return Condition(**values)


def parse_rules(path: str, data: bytes, ctx: _Ctx) -> list[RuleSpec]:
    doc, src = parse_toml(path, data)
    unknown = sorted(set(doc) - {"rule"})
    if unknown:
        raise src.error(
            f"unknown key {quote(unknown[0])}: a rule file holds only [[rule]] tables",
            src.anywhere(unknown[0]),
        )
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list) or not raw_rules:
        raise src.error("a rule file needs at least one [[rule]] table")
    out = []
    for index, raw in enumerate(raw_rules):
        start = src.rule(index)

        def at(
            key: str | None = None, needle: str | None = None, _s: int | None = start
        ) -> tuple[int, int]:
            return src.key(_s, key, needle)

        if not isinstance(raw, dict):
            raise src.error("each [[rule]] must be a table", at())
        rid = raw.get("id")
        if not isinstance(rid, str) or not rid:
            raise src.error('this rule has no id (add id = "...")', at())
        where = f"rule {quote(rid)}"
        if not _ID.match(rid):
            raise src.error(f"{where}: ids use lower-case letters, digits, '.', '_', '-'", at("id"))
        if rid.startswith(RESERVED_PREFIXES):
            raise src.error(
                f"{where}: ids starting with {', '.join(RESERVED_PREFIXES)} are the engine's own",
                at("id"),
            )
        if rid in ctx.seen_ids:
            raise src.error(
                f"duplicate rule id {quote(rid)} (first in {ctx.seen_ids[rid]})", at("id")
            )
        extra = sorted(set(raw) - _RULE_META - set(CONDITION_KEYS))
        if extra:
            raise src.error(
                f"{where} has unknown key {quote(extra[0])} "
                f"(conditions: {', '.join(CONDITION_KEYS)})",
                at(extra[0]),
            )
        effect = raw.get("effect")
        if effect not in EFFECTS:
            raise src.error(f"{where}: effect must be one of {', '.join(EFFECTS)}", at("effect"))
        reason = _text(src, at("reason"), f"{where}.reason", raw.get("reason"))
        description = raw.get("description", reason)
        description = _text(src, at("description"), f"{where}.description", description)

        def locate_when(k: str, n: str | None, _s: int | None = start) -> tuple[int, int]:
            return src.key(_s, k, n)

        def locate_unless(k: str, n: str | None, _s: int | None = start) -> tuple[int, int]:
            return src.key_after(_s, "unless", k, n)

        when = _condition(src, locate_when, where, raw, ctx)
        unless_raw = raw.get("unless", [])
        if isinstance(unless_raw, dict):
            unless_raw = [unless_raw]
        if not isinstance(unless_raw, list) or not all(isinstance(u, dict) for u in unless_raw):
            raise src.error(
                f"{where}.unless must be a table of conditions or a list of them", at("unless")
            )
        unless = []
        for u in unless_raw:
            bad = sorted(set(u) - set(CONDITION_KEYS))
            if bad:
                raise src.error(
                    f"{where}.unless has unknown key {quote(bad[0])} (conditions: "
                    f"{', '.join(CONDITION_KEYS)})",
                    src.key_after(start, "unless", bad[0]),
                )
            if not u:
                raise src.error(
                    f"{where}.unless has an empty table, which would always hold and void the "
                    "rule: name at least one condition",
                    at("unless"),
                )
            unless.append(_condition(src, locate_unless, f"{where}.unless", u, ctx))
        obligation, text, days = "", "", 0
        if effect == "oblige":
            obligation = raw.get("obligation", "")
            if obligation not in OBLIGATION_KINDS:
                raise src.error(
                    f"{where}: obligation must be one of {', '.join(OBLIGATION_KINDS)}",
                    at("obligation"),
                )
            text = _text(src, at("text"), f"{where}.text", raw.get("text"))
            _check_template(src, at("text"), where, text)
            if obligation == "max_retention_days":
                days = _positive_int(src, at("days"), f"{where}.days", raw.get("days"))
            elif "days" in raw:
                raise src.error(f"{where}: days belongs to max_retention_days only", at("days"))
        else:
            for key in ("obligation", "text", "days"):
                if key in raw:
                    raise src.error(f'{where}: {key} belongs to effect = "oblige" rules', at(key))
        if effect == "hold":
            if when.embargoed is False:
                raise src.error(
                    f"{where}: a hold applies only while an embargo is in force; "
                    "remove embargoed = false",
                    at("embargoed"),
                )
            when = Condition(**{**_as_dict(when), "embargoed": True})
        if effect == "permit" and not when.names_recipient:
            raise src.error(
                f"{where}: a permit must say whom it permits (recipient_groups, "
                "recipient_roles, recipient_countries, recipient_agencies or recipient_named); "
                "nothing here may mean everyone",
                at("effect"),
            )
        if when.kinds is not None and when.sections is not None:
            carried = {s for k in when.kinds for s in ctx.catalogue.kinds[k].sections}
            stray = sorted(when.sections - carried)
            if stray:
                raise src.error(
                    f"{where}.sections names {quote(stray[0])}, which none of its kinds carries",
                    at("sections", stray[0]),
                )
        ctx.seen_ids[rid] = path
        out.append(
            RuleSpec(
                id=rid,
                effect=effect,
                description=description,
                reason=reason,
                when=when,
                unless=tuple(unless),
                obligation=obligation,
                text=text,
                days=days,
                file=path,
                line=(start + 1) if start is not None else 0,
            )
        )
    return out


def _as_dict(c: Condition) -> dict[str, Any]:
    return {f.name: getattr(c, f.name) for f in fields(c)}


def _check_template(src: SourceText, at: tuple[int, int], where: str, text: str) -> None:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise src.error(f"{where}.text is not a valid template ({exc})", at) from exc
    for _literal, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conv:
            raise src.error(
                f"{where}.text uses {{{name}}}; the placeholders are "
                + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
                + " (write {{ and }} for braces)",
                at,
            )
