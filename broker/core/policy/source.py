"""Reading a policy bundle: TOML text -> validated specifications.

Every error names the file, line and column of what to fix. TOML syntax
errors carry them already; for semantic errors (an unknown group, an empty
list, a misspelt key) the line is found by scanning the text for the table
header or rule and the key inside it.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn

from broker.core.bounds import quote
from broker.core.policy import labels as labels_mod
from broker.core.policy import requestkinds
from broker.core.policy.kindsuites import parse_suites
from broker.core.policy.labels import Labels
from broker.core.policy.lookups import LookupSpec, parse_lookup
from broker.core.policy.model import (
    DATA_SUBJECTS,
    EVALUATION_INFORMATION,
    EVALUATION_SOURCES,
    HANDLING_CODES,
    HEADER_FIELDS,
    OBLIGATION_KINDS,
    TLP_LEVELS,
    KindSpec,
)
from broker.core.policy.requestkinds import RequestSpec, parse_request
from broker.errors import InvalidArgument

EFFECTS = ("permit", "forbid", "hold", "oblige")
# Rule ids the engine uses itself.
RESERVED_PREFIXES = ("registry.", "originator.", "catalogue.", "default-deny")
TEMPLATE_FIELDS = ("organisation", "caveats", "days")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class PolicyError(InvalidArgument):
    """The bundle is malformed, or a notice does not fit the catalogue.

    For bundle errors `file`, `line` and `column` (1-based) say where; str()
    starts with "file:line:column: ".
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        if file and line:
            where = f"{file}:{line}:{column or 1}: "
        elif file:
            where = f"{file}: "
        else:
            where = ""
        super().__init__(where + message)


# -- locating keys in TOML text -----------------------------------------------------------


class SourceText:
    """One TOML file's text, with helpers that find where a table, rule or key sits."""

    _HEADER = re.compile(r"^\[")
    _RULE = re.compile(r"^\s*\[\[\s*rule\s*\]\]")

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def error(self, message: str, at: tuple[int, int] | None = None) -> PolicyError:
        line, col = at or (1, 1)
        return PolicyError(message, file=self.path, line=line, column=col)

    _SUBTABLE = re.compile(r"^\[\[?\s*rule\s*\.")

    def _span_end(self, start: int) -> int:
        """Where the table starting at `start` ends (a rule's span takes in [rule.*] tables)."""
        in_rule = self._RULE.match(self.lines[start]) is not None
        for i in range(start + 1, len(self.lines)):
            line = self.lines[i]
            if self._HEADER.match(line) and not (in_rule and self._SUBTABLE.match(line)):
                return i
        return len(self.lines)

    def key_after(
        self, start: int | None, anchor: str, key: str, needle: str | None = None
    ) -> tuple[int, int]:
        """(line, column) of `needle` (else `key`) at or after the `anchor` key of a table."""
        if start is None:
            return self.key(start, key, needle)
        end = self._span_end(start)
        anchor_re = re.compile(r"^(\s*)(\[\[?\s*rule\s*\.\s*)?" + re.escape(anchor) + r"\b")
        for i in range(start + 1, end):
            if not anchor_re.match(self.lines[i]):
                continue
            for j in range(i, end):
                col = _find_quoted(self.lines[j], needle) if needle is not None else None
                if col is None:
                    m = re.search(r"\b" + re.escape(key) + r"\s*=", self.lines[j])
                    col = m.start() if m and needle is None else None
                if col is not None:
                    return (j + 1, col + 1)
            return (i + 1, 1)
        return self.key(start, key, needle)

    def table(self, *names: str) -> int | None:
        """0-based line of the header [a."b".c] for names ("a", "b", "c"), or None."""
        parts = []
        for name in names:
            e = re.escape(name)
            parts.append(r"\s*(?:\"" + e + r"\"|'" + e + r"'|" + e + r")\s*")
        pattern = re.compile(r"^\[" + r"\.".join(parts) + r"\]")
        for i, line in enumerate(self.lines):
            if pattern.match(line):
                return i
        return None

    def rule(self, index: int) -> int | None:
        """0-based line of the index-th [[rule]] header, or None."""
        seen = -1
        for i, line in enumerate(self.lines):
            if self._RULE.match(line):
                seen += 1
                if seen == index:
                    return i
        return None

    def key(
        self, start: int | None, key: str | None = None, needle: str | None = None
    ) -> tuple[int, int]:
        """(line, column), 1-based, of `needle` in the value of `key` in the table at `start`.

        Falls back to the key, then to the table header, then to the file's start.
        """
        if start is None:
            if needle is not None:
                return self.anywhere(needle) or (1, 1)
            return (1, 1)
        end = self._span_end(start)
        if key is None:
            return (start + 1, 1)
        key_re = re.compile(r"^(\s*)(\"?" + re.escape(key) + r"\"?)\s*[=.]")
        for i in range(start + 1, end):
            m = key_re.match(self.lines[i])
            if m is None:
                continue
            if needle is not None:
                for j in range(i, end):
                    if j > i and re.match(r"^\s*[A-Za-z_\"'][\w\"'.-]*\s*=", self.lines[j]):
                        break
                    col = _find_quoted(self.lines[j], needle)
                    if col is not None:
                        return (j + 1, col + 1)
            return (i + 1, len(m.group(1)) + 1)
        return (start + 1, 1)

    def anywhere(self, needle: str) -> tuple[int, int] | None:
        for i, line in enumerate(self.lines):
            col = _find_quoted(line, needle)
            if col is not None:
                return (i + 1, col + 1)
        return None


def _find_quoted(line: str, needle: str) -> int | None:
    for mark in ('"', "'"):
        col = line.find(mark + needle + mark)
        if col >= 0:
            return col
    col = line.find(needle)
    return col if col >= 0 else None


def parse_toml(path: str, data: bytes) -> tuple[dict[str, Any], SourceText]:
    """Parse one file; raise PolicyError with file:line:column on bad TOML."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8 text ({exc.reason})", file=path, line=1, column=1) from exc
    src = SourceText(path, text)
    try:
        return tomllib.loads(text), src
    except RecursionError:
        # tomllib recurses once per nesting level: a hostile file must not crash the caller.
        raise PolicyError(
            "invalid TOML: arrays or inline tables are nested too deeply", file=path, line=1
        ) from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if m:
            raise PolicyError(
                f"invalid TOML: {msg[: m.start()]}", file=path, line=int(m[1]), column=int(m[2])
            ) from exc
        m = re.search(r"\s*\(at end of document\)$", msg)
        if m:
            raise PolicyError(
                f"invalid TOML: {msg[: m.start()]} at the end of the file",
                file=path,
                line=max(1, len(src.lines)),
                column=1,
            ) from exc
        raise PolicyError(f"invalid TOML: {msg}", file=path, line=1, column=1) from exc


# -- specifications -----------------------------------------------------------------------


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


# -- validation helpers -------------------------------------------------------------------


def _strings(
    src: SourceText, at: tuple[int, int], where: str, value: Any, *, allow_empty: bool = False
) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise src.error(f"{where} must be a list of non-empty strings", at)
    if not value and not allow_empty:
        raise src.error(
            f"{where} is an empty list, which would match nobody; "
            "remove the key to mean 'any', or name at least one entry",
            at,
        )
    dupes = sorted(v for v, n in Counter(value).items() if n > 1)  # linear: lists may be long
    if dupes:
        raise src.error(f"{where} lists {', '.join(dupes)} twice", at)
    return tuple(value)


def _positive_int(src: SourceText, at: tuple[int, int], where: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise src.error(f"{where} must be a positive integer", at)
    return value


def _text(src: SourceText, at: tuple[int, int], where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise src.error(f"{where} must be a non-empty string", at)
    return value


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


# -- catalogue ----------------------------------------------------------------------------

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


# -- groups -------------------------------------------------------------------------------


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


# -- rules --------------------------------------------------------------------------------

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


def new_context(catalogue: Catalogue, groups: Mapping[str, GroupSpec]) -> _Ctx:
    return _Ctx(catalogue, groups)
