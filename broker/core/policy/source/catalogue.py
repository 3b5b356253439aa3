"""catalogue.toml read and checked (pure): purposes, sections, authorities, kinds, labels.

:func:`parse_catalogue` checks every kind against the names the catalogue
defines (sections, purposes, data subjects, header fields, retention and review
days, content fields), hands the + post-quantum, + lookups and + judicial tables
to their own parsers, and the [labels] table to broker/core/policy/labels.py
against what the catalogue defines. Part of :mod:`broker.core.policy.source`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from broker.core.bounds import quote
from broker.core.policy import labels as labels_mod
from broker.core.policy import requestkinds
from broker.core.policy.kindsuites import parse_suites
from broker.core.policy.labels import Labels
from broker.core.policy.lookups import LookupSpec, parse_lookup
from broker.core.policy.model import DATA_SUBJECTS, HEADER_FIELDS, KindSpec
from broker.core.policy.requestkinds import RequestSpec, parse_request
from broker.core.policy.source.specs import Catalogue
from broker.core.policy.source.text import (
    _ID,
    SourceText,
    _positive_int,
    _strings,
    _text,
    parse_toml,
)


def _names_table(src: SourceText, doc: dict[str, Any], name: str, what: str) -> dict[str, str]:
    table = doc.get(name)
    start = src.table(name)
    if not isinstance(table, dict) or not table:
        raise src.error(
            f"needs a non-empty [{name}] table naming every {what} with a description",
            (start + 1, 1) if start is not None else None,
        )
    out = {}
    for key, value in table.items():
        if not _ID.match(key):
            raise src.error(
                f"{name} entry {quote(key)}: use lower-case letters, digits, '_', '-' or '.'",
                src.key(start, key),
            )
        out[key] = _text(src, src.key(start, key), f"{name}.{key}", value)
    return out


_KIND_KEYS = {
    "title",
    "sections",
    "required_sections",
    "purposes",
    "data_subjects",
    "required_header_fields",
    "retention_days",
    "review_days",
    "embargo_max_hours",
    "content_fields",
    "lookup",  # + lookups: searchable selectors (broker/core/policy/lookups.py)
    "request",  # + judicial: request kinds (broker/core/policy/requestkinds.py)
    "suites",  # + post-quantum: envelope suites required (broker/core/policy/kindsuites.py)
}


def parse_catalogue(path: str, data: bytes) -> Catalogue:
    doc, src = parse_toml(path, data)
    unknown = sorted(set(doc) - {"purposes", "sections", "authorities", "kinds", "labels"})
    if unknown:
        raise src.error(
            f"unknown table {quote(unknown[0])}: the catalogue has [purposes], [sections], "
            "[authorities], [kinds.<name>] and [labels]",
            src.key(src.table(unknown[0]), None) if src.table(unknown[0]) is not None else None,
        )
    purposes = _names_table(src, doc, "purposes", "purpose")
    sections = _names_table(src, doc, "sections", "section")
    authorities = _names_table(src, doc, "authorities", "authority type (recipient role)")
    table = doc.get("kinds")
    if not isinstance(table, dict) or not table:
        raise src.error("needs at least one [kinds.<name>] table")
    kinds = {}
    lookups: dict[str, LookupSpec] = {}
    requests: dict[str, RequestSpec] = {}
    for name, k in table.items():
        start = src.table("kinds", name)
        where = f"kinds.{name}"

        def at(
            key: str | None = None, needle: str | None = None, _s: int | None = start
        ) -> tuple[int, int]:
            return src.key(_s, key, needle)

        if not _ID.match(name):
            raise src.error(
                f"kind {quote(name)}: use lower-case letters, digits, '_', '-', '.'", at()
            )
        if not isinstance(k, dict):
            raise src.error(f"{where} must be a table", at())
        extra = sorted(set(k) - _KIND_KEYS)
        if extra:
            raise src.error(
                f"{where} has unknown key {quote(extra[0])} "
                f"(allowed: {', '.join(sorted(_KIND_KEYS))})",
                at(extra[0]),
            )
        for key in ("sections", "purposes", "retention_days", "review_days"):
            if key not in k:
                raise src.error(f"{where} needs {key}", at())
        secs = _strings(src, at("sections"), f"{where}.sections", k["sections"])
        for s in secs:
            if s not in sections:
                raise src.error(
                    f"{where}.sections names {quote(s)}, which is not in [sections]",
                    at("sections", s),
                )
        required = _strings(
            src,
            at("required_sections"),
            f"{where}.required_sections",
            k.get("required_sections", []),
            allow_empty=True,
        )
        for s in required:
            if s not in secs:
                raise src.error(
                    f"{where}.required_sections names {quote(s)}, which is not among its sections",
                    at("required_sections", s),
                )
        kind_purposes = _strings(src, at("purposes"), f"{where}.purposes", k["purposes"])
        for p in kind_purposes:
            if p not in purposes:
                raise src.error(
                    f"{where}.purposes names {quote(p)}, which is not in [purposes]",
                    at("purposes", p),
                )
        subjects = _strings(
            src,
            at("data_subjects"),
            f"{where}.data_subjects",
            k.get("data_subjects", list(DATA_SUBJECTS)),
        )
        for d in subjects:
            if d not in DATA_SUBJECTS:
                raise src.error(
                    f"{where}.data_subjects names {quote(d)}; use {', '.join(DATA_SUBJECTS)}",
                    at("data_subjects", d),
                )
        header = _strings(
            src,
            at("required_header_fields"),
            f"{where}.required_header_fields",
            k.get("required_header_fields", []),
            allow_empty=True,
        )
        for h in header:
            if h not in HEADER_FIELDS:
                raise src.error(
                    f"{where}.required_header_fields names {quote(h)}; "
                    f"use {', '.join(HEADER_FIELDS)}",
                    at("required_header_fields", h),
                )
        retention = _positive_int(
            src, at("retention_days"), f"{where}.retention_days", k["retention_days"]
        )
        review = _positive_int(src, at("review_days"), f"{where}.review_days", k["review_days"])
        if review > retention:
            raise src.error(
                f"{where}.review_days ({review}) must not exceed retention_days ({retention})",
                at("review_days"),
            )
        embargo = k.get("embargo_max_hours", 0)
        if embargo != 0:
            embargo = _positive_int(
                src, at("embargo_max_hours"), f"{where}.embargo_max_hours", embargo
            )
        content = k.get("content_fields", {})
        cstart = src.table("kinds", name, "content_fields")
        if not isinstance(content, dict):
            raise src.error(f"{where}.content_fields must be a table", at("content_fields"))
        content_fields = []
        for sec, names in content.items():
            cat = src.key(cstart, sec) if cstart is not None else at("content_fields", sec)
            if sec not in secs:
                raise src.error(
                    f"{where}.content_fields names section {quote(sec)}, "
                    "which the kind does not carry",
                    cat,
                )
            content_fields.append((sec, _strings(src, cat, f"{where}.content_fields.{sec}", names)))
        suites: tuple[str, ...] = ()
        if "suites" in k:  # + post-quantum: the hook; parsing lives in policy/kindsuites.py

            def sfail(msg: str, needle: str | None) -> NoReturn:
                raise src.error(msg, at("suites", needle))

            suites = parse_suites(k["suites"], where, sfail)
        kinds[name] = KindSpec(
            name=name,
            title=str(k.get("title", name)),
            sections=secs,
            required_sections=required,
            purposes=kind_purposes,
            retention_days=retention,
            review_days=review,
            data_subjects=subjects,
            required_header_fields=header,
            content_fields=tuple(content_fields),
            embargo_max_hours=embargo,
            suites=suites,
        )
        if "lookup" in k:  # + lookups: the hook; parsing lives in policy/lookups.py
            lstart = src.table("kinds", name, "lookup")

            def fail(msg: str, key: str | None, _s: int | None = lstart) -> NoReturn:
                raise src.error(msg, src.key(_s, key) if _s is not None else at("lookup"))

            lookups[name] = parse_lookup(name, k["lookup"], where, authorities, fail)
        if "request" in k:  # + judicial: the hook; parsing lives in policy/requestkinds.py
            rstart = src.table("kinds", name, "request")

            def rfail(msg: str, key: str | None, _s: int | None = rstart) -> NoReturn:
                raise src.error(msg, src.key(_s, key) if _s is not None else at("request"))

            requests[name] = parse_request(name, k["request"], where, rfail)
    missing = requestkinds.check_kinds(kinds, requests)
    if missing:
        raise src.error(
            f"kinds.{missing} is a request kind and needs a request table "
            "(instrument, grounds, deadlines)",
            src.key(src.table("kinds", missing), None),
        )
    labels = _labels(src, doc, kinds, sections, requests)
    return Catalogue(kinds, sections, purposes, authorities, lookups, requests, labels)


def _labels(
    src: SourceText,
    doc: dict[str, Any],
    kinds: Mapping[str, KindSpec],
    sections: Mapping[str, str],
    requests: Mapping[str, RequestSpec],
) -> Labels:
    """+ judicial: the [labels] table, checked against what the catalogue defines."""
    measures = frozenset(m for r in requests.values() for m in r.measures)
    grounds = frozenset(g for r in requests.values() for g in r.grounds)
    lifecycle = {
        "states": frozenset(requestkinds.STATES),
        "steps": frozenset(requestkinds.STEPS),
        "priorities": frozenset(requestkinds.PRIORITIES),
        "deadlines": frozenset(requestkinds.DEADLINES),
    }
    known = {"kinds": frozenset(kinds), "sections": frozenset(sections)} | lifecycle
    known |= {"measures": measures, "grounds": grounds}
    # Fields: every content field a kind asks of a section must be labelled; the header
    # fields kinds require too, once the catalogue is labelled at all.
    content = frozenset(f for k in kinds.values() for _, names in k.content_fields for f in names)
    header = frozenset(h for k in kinds.values() for h in k.required_header_fields)
    known["fields"] = content | frozenset(HEADER_FIELDS)
    required = {
        "kinds": frozenset(requests),
        "sections": frozenset(s for r in requests for s in kinds[r].sections),
        "measures": measures,
        "grounds": grounds,
        "fields": content | header if requests or content else frozenset(),
    }
    if requests:
        required |= lifecycle

    def fail(msg: str, at: tuple[str, str] | None) -> NoReturn:
        start = src.table("labels", *at) if at else src.table("labels")
        raise src.error(msg, src.key(start, None) if start is not None else None)

    return labels_mod.parse_labels(doc.get("labels"), known, required, fail)
