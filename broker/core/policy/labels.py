"""Labels of the catalogue in INTERPOL's working languages: English, French, Spanish
and Arabic.

The catalogue's ``[labels]`` table holds one table per category, one entry per
name, each with all four languages::

    [labels.kinds."request.eio"]
    en = "European Investigation Order"
    fr = "Décision d'enquête européenne"
    es = "Orden europea de investigación"
    ar = "أمر التحقيق الأوروبي"

Categories: ``kinds``, ``sections``, ``measures``, ``grounds`` (refusal grounds),
``states`` and ``steps`` (of a request), ``priorities``, ``deadlines`` (decision,
execution, overdue), ``fields`` (the content fields a kind's ``content_fields`` ask
of its sections, and the header fields a kind may require: see :data:`HEADER_FIELDS`
in :mod:`broker.core.policy.model`). A label may only name what the catalogue or the
request lifecycle defines; every request kind, each of its sections, measures and
refusal grounds, every state, step and priority, and every field named in a
``content_fields`` table or a ``required_header_fields`` list must have one (the
parser checks it). Lookups fall back to English, then to the name.

Parsing only; the hook in :mod:`broker.core.policy.source.catalogue` calls
:func:`parse_labels`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

LANGUAGES: Final = ("en", "fr", "es", "ar")
CATEGORIES: Final = (
    "kinds",
    "sections",
    "measures",
    "grounds",
    "states",
    "steps",
    "priorities",
    "deadlines",
    "fields",
)

# fail(message, (category, name) or None) raises a PolicyError located at that table.
Fail = Callable[[str, tuple[str, str] | None], NoReturn]


@dataclass(frozen=True)
class Labels:
    """Catalogue labels: category -> name -> language -> text."""

    table: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)

    def label(self, category: str, name: str, lang: str = "en") -> str:
        """The label of `name` in `lang`; English when missing, else the name itself."""
        entry = self.table.get(category, {}).get(name)
        if entry is None:
            return name
        return entry.get(lang) or entry.get("en") or name

    def has(self, category: str, name: str) -> bool:
        return name in self.table.get(category, {})


def check_language(lang: str) -> str:
    """Return `lang` if it is one of LANGUAGES; raise ValueError naming them otherwise."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang[:16]!r}: use one of {', '.join(LANGUAGES)}")
    return lang


def parse_labels(
    doc: Any,
    known: Mapping[str, frozenset[str]],
    required: Mapping[str, frozenset[str]],
    fail: Fail,
) -> Labels:
    """Parse ``[labels]``. `known` names what each category may label; `required` what
    must be labelled. `fail` raises the located PolicyError."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        fail("labels must be a table of categories", None)
    extra = sorted(set(doc) - set(CATEGORIES))
    if extra:
        fail(f"labels has unknown category {extra[0][:32]!r}: use {', '.join(CATEGORIES)}", None)
    out: dict[str, dict[str, dict[str, str]]] = {}
    for category in CATEGORIES:
        entries = doc.get(category, {})
        if not isinstance(entries, dict):
            fail(f"labels.{category} must be a table", None)
        allowed = known.get(category, frozenset())
        parsed: dict[str, dict[str, str]] = {}
        for name, entry in entries.items():
            where = f"labels.{category}.{name}"
            if name not in allowed:
                fail(f"{where}: {category} has no {name[:48]!r} in the catalogue", (category, name))
            if not isinstance(entry, dict):
                fail(f"{where} must be a table of languages", (category, name))
            langs = set(entry)
            if langs != set(LANGUAGES):
                missing = sorted(set(LANGUAGES) - langs)
                fail(
                    f"{where} needs exactly {', '.join(LANGUAGES)}"
                    + (f" (missing {', '.join(missing)})" if missing else ""),
                    (category, name),
                )
            for lang in LANGUAGES:
                text = entry[lang]
                if not isinstance(text, str) or not text.strip() or len(text) > 200:
                    fail(f"{where}.{lang} must be a label of 1 to 200 characters", (category, name))
            parsed[name] = {lang: entry[lang] for lang in LANGUAGES}
        for name in sorted(required.get(category, frozenset())):
            if name not in parsed:
                fail(f"labels.{category} needs a label for {name!r} (en, fr, es, ar)", None)
        out[category] = parsed
    return Labels(out)
