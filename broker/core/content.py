"""What a section's content holds: the fields the catalogue asks of a kind.

The catalogue's `content_fields` name, per kind and section, the fields the
(encrypted) content must carry: `identity = ["family_name", "forename", ...]`.
The broker never reads a section, so the originator's SDK checks them before
sealing (broker/client/publisher.py), and the CLI before that.

A section's content is either a JSON object (its keys are the fields) or text
whose lines read `field: value` (the format SIRENE forms and most case systems
export). A field counts when its value is not empty. Content that is neither
holds no fields: a section "zzz" of a kind that declares fields is refused.
Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from broker.core.bounds import quote
from broker.core.policy.model import KindSpec

FIELD_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*:\s*(.*?)\s*$")


class ContentError(ValueError):
    """A section lacks fields its kind requires; str() names the kind, section and fields."""


def fields_in(content: bytes | str) -> frozenset[str]:
    """The fields a section's content carries with a non-empty value."""
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return frozenset(
                str(k) for k, v in data.items() if v not in (None, "", [], {}) and str(k).strip()
            )
    found = set()
    for line in text.splitlines():
        m = FIELD_LINE.match(line)
        if m and m.group(2):
            found.add(m.group(1))
    return frozenset(found)


def missing_fields(spec: KindSpec, sections: Mapping[str, bytes | str]) -> dict[str, list[str]]:
    """Per section given, the fields `spec.content_fields` asks for that it lacks."""
    out: dict[str, list[str]] = {}
    for section, wanted in spec.content_fields:
        if section not in sections:
            continue  # a missing section is the catalogue's required_sections' business
        have = fields_in(sections[section])
        lacking = [f for f in wanted if f not in have]
        if lacking:
            out[section] = lacking
    return out


def check_content(spec: KindSpec, sections: Mapping[str, bytes | str]) -> None:
    """Raise ContentError when a section lacks a field its kind's catalogue entry asks for.

    The message names the kind, each section and its missing fields, and how to write
    them; nothing else is checked (values are the originator's)."""
    missing = missing_fields(spec, sections)
    if not missing:
        return
    parts = [
        f"section {quote(s)} lacks {', '.join(fields)}" for s, fields in sorted(missing.items())
    ]
    example = next(iter(sorted(missing.items())))
    raise ContentError(
        f"{spec.name} content: {'; '.join(parts)} (write one 'field: value' line per field, "
        f"or a JSON object, e.g. --section {example[0]}=@FILE with '{example[1][0]}: ...')"
    )
