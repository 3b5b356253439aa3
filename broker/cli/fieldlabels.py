"""The catalogue's fields in the chosen `--lang`, beside their identifiers.

`broker node publish --lang fr` adds, to a refusal naming fields a section lacks (or a
header field the kind requires), each field's label: ``[fr: family_name = Nom de
famille; forename = Prénom]``. `broker admin policy kinds DIR --lang fr` lists, offline,
every kind of a bundle with its sections, required header fields and content fields,
each identifier with its label. The labels are the catalogue's ``[labels.fields]``
(broker/core/policy/labels.py); a missing one falls back to English, then to the name.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from broker.core import content
from broker.core.policy.labels import LANGUAGES, Labels
from broker.core.policy.model import KindSpec

# The words of a refusal that name a header field (the policy's and the CLI's messages).
HEADER_NEEDLES = (
    ("data_subject", ("data subject", "--data-subject")),
    ("evaluation", ("evaluation",)),
    ("handling_codes", ("handling code",)),
)


def add_lang_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lang",
        choices=LANGUAGES,
        default="en",
        help="language of the catalogue's field labels shown beside their identifiers",
    )


def gloss(labels: Labels, names: Iterable[str], lang: str) -> str:
    """'[fr: family_name = Nom de famille; forename = Prénom]' ('' for no names)."""
    parts = [f"{n} = {labels.label('fields', n, lang)}" for n in dict.fromkeys(names)]
    return f" [{lang}: {'; '.join(parts)}]" if parts else ""


def refused_fields(
    spec: KindSpec | None, sections: Mapping[str, bytes | str], message: str
) -> list[str]:
    """The fields a publish refusal is about: those the kind's content_fields ask of the
    sections given and they lack, and the required header fields the message names."""
    if spec is None:
        return []
    out: list[str] = []
    if "content" in message:
        for _, lacking in sorted(content.missing_fields(spec, sections).items()):
            out += lacking
    for field, needles in HEADER_NEEDLES:
        if field in spec.required_header_fields and any(n in message for n in needles):
            out.append(field)
    return out


def term(labels: Labels, category: str, name: str, lang: str) -> str:
    """'identity (Identité)': the identifier, and its label when it says more."""
    text = labels.label(category, name, lang)
    return name if text == name else f"{name} ({text})"


def kind_rows(kinds: Mapping[str, KindSpec], labels: Labels, lang: str) -> list[dict[str, Any]]:
    """Every kind as data: identifiers with their labels in `lang`."""

    def named(category: str, names: Iterable[str]) -> list[dict[str, str]]:
        return [{"name": n, "label": labels.label(category, n, lang)} for n in names]

    return [
        {
            "kind": name,
            "label": labels.label("kinds", name, lang),
            "sections": named("sections", spec.sections),
            "required_header_fields": named("fields", spec.required_header_fields),
            "content_fields": [
                {
                    "section": section,
                    "label": labels.label("sections", section, lang),
                    "fields": named("fields", fields),
                }
                for section, fields in spec.content_fields
            ],
        }
        for name, spec in sorted(kinds.items())
    ]


def render_kinds(kinds: Mapping[str, KindSpec], labels: Labels, lang: str) -> list[str]:
    """The human listing: a line per kind, then its sections and fields indented."""
    out = []
    for name, spec in sorted(kinds.items()):
        out.append(term(labels, "kinds", name, lang))
        out.append(
            "  sections: " + ", ".join(term(labels, "sections", s, lang) for s in spec.sections)
        )
        if spec.required_header_fields:
            header = ", ".join(term(labels, "fields", h, lang) for h in spec.required_header_fields)
            out.append(f"  header: {header}")
        for section, fields in spec.content_fields:
            listed = ", ".join(term(labels, "fields", f, lang) for f in fields)
            out.append(f"  {term(labels, 'sections', section, lang)}: {listed}")
    return out


def register_kinds(psub: Any) -> None:
    """Add `kinds` to `broker admin policy`."""
    k = psub.add_parser(
        "kinds",
        help="the kinds of a bundle directory, with their sections and fields, labelled",
        description="List, offline, every kind of a bundle directory with its sections, the "
        "header fields it requires and the fields each section must hold, each identifier "
        "beside its catalogue label in --lang.",
    )
    k.add_argument("dir", type=Path, help="the bundle directory, e.g. policies")
    k.add_argument("--kind", action="append", default=[], help="only this kind (repeat)")
    add_lang_flag(k)
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=run_kinds)


def run_kinds(args: argparse.Namespace) -> int:
    from broker.bundles import read_bundle_dir
    from broker.core.policy import compile_bundle
    from broker.errors import InvalidArgument

    bundle = compile_bundle(read_bundle_dir(args.dir))  # a PolicyError names file:line:col
    unknown = [k for k in args.kind if k not in bundle.kinds]
    if unknown:
        raise InvalidArgument(f"the bundle has no kind {unknown[0][:64]!r}")
    kinds = {k: v for k, v in bundle.kinds.items() if not args.kind or k in args.kind}
    labels = bundle.catalogue.labels
    if args.json:
        print(json.dumps(kind_rows(kinds, labels, args.lang), ensure_ascii=False, indent=2))
    else:
        for line in render_kinds(kinds, labels, args.lang):
            print(line)
    return 0
