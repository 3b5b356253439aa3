"""What a section's content holds: the fields the catalogue asks of a kind.

The catalogue's `content_fields` name, per kind and section, the fields the
(encrypted) content must carry: `identity = ["family_name", "forename", ...]`.
Three parties check them, none of them trusting the others:

- the originator's SDK before sealing (`check_content`, broker/client/publisher.py;
  NodeConfig.check_content, on by default) and declares, per section, the catalogue
  fields the content holds: the content manifest (`manifest_of`), carried in each
  SectionDescriptor and so signed through the header's sections_root;
- the broker, which never reads a section, at publish (`check_manifest`, from
  broker/core/relay.py): a manifest lacking a field the kind requires, or naming a
  field the catalogue does not list for that section, is refused (INVALID_ARGUMENT);
- the recipient's SDK after opening (`manifest_lies`, broker/client/intake.py): a
  section lacking a field its signed manifest names is refused, as a lie of the
  originator (a `content_manifest` finding, no receipt); one lacking a field the signed
  policy asks of it is shown and reported (`content_incomplete`: the broker skipped its
  check, or the notice predates manifests).

So the broker's check makes the originator claim the required fields and the
recipient's check makes the claim true: neither a sloppy SDK nor a lying sender gets a
notice through. Privacy: a manifest holds names only, never values, and only the
catalogue's public names for that section; a manifest the broker accepts is therefore
exactly the catalogue's list for the section, which the broker knew already from the
kind and the section name: it learns nothing from it (a name outside the catalogue,
which could carry content, is refused). The manifest sits in the descriptors rather
than in the header so that a recipient, which sees only its own sections'
descriptors, learns no more of the withheld sections than before (the padded trees
hide their count). Envelopes sealed before manifests existed have none: the broker
refuses them for the kinds that declare content_fields (a new publish must declare),
and the recipient has no claim to check in deliveries stored before then.

A section's content is either a JSON object (its keys are the fields) or text
whose lines read `field: value` (the format SIRENE forms and most case systems
export). A field counts when its value is not empty. Content that is neither
holds no fields: a section "zzz" of a kind that declares fields is refused.
Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence

from broker.core.bounds import quote
from broker.core.policy.model import KindSpec

# A `field: value` line with a non-empty value: matched at the start of each line, it
# stops at the value's first character (a pattern that captured the value and its trailing
# spaces walked the whole line; tests/core/test_content.py holds it to that definition).
FIELD_LINE = re.compile(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*:\s*\S")


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
    return frozenset(m.group(1) for m in map(FIELD_LINE.match, text.splitlines()) if m)


def missing_fields(
    spec: KindSpec,
    sections: Mapping[str, bytes | str],
    proven: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Per section given, the fields `spec.content_fields` asks for that it lacks.

    `proven`: fields already shown to be in each section's content (a manifest that
    `manifest_lies` found true); a section holding every field asked of it is not parsed
    again."""
    out: dict[str, list[str]] = {}
    for section, wanted in spec.content_fields:
        if section not in sections:
            continue  # a missing section is the catalogue's required_sections' business
        if proven is not None and set(wanted) <= set(proven.get(section, ())):
            continue
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


def manifest_of(spec: KindSpec, sections: Mapping[str, bytes | str]) -> dict[str, tuple[str, ...]]:
    """The content manifest an originator declares: per section of `sections` for which
    the kind lists content_fields, those fields its content holds, in catalogue order."""
    wanted = dict(spec.content_fields)
    out: dict[str, tuple[str, ...]] = {}
    for section, data in sections.items():
        if section in wanted:
            have = fields_in(data)
            out[section] = tuple(f for f in wanted[section] if f in have)
    return out


def check_manifest(
    spec: KindSpec, manifest: Mapping[str, Sequence[str]], sections: Collection[str]
) -> None:
    """The broker's check, on names only: raise ContentError when the manifest of one of
    `sections` names a field the catalogue does not list for it (or twice), lacks one the
    kind requires, or lists them in another order than the catalogue's (so an accepted
    manifest is exactly the catalogue's list and carries nothing of its own). The message
    names the kind, the section and the fields."""
    wanted = dict(spec.content_fields)
    for section in sorted(sections):
        declared = list(manifest.get(section, ()))
        asked = wanted.get(section, ())
        odd = [f for f in declared if f not in asked]
        if odd:
            listed = f"lists only {', '.join(asked)}" if asked else "lists no content_fields"
            raise ContentError(
                f"{spec.name} section {quote(section)}: the content manifest names "
                f"{quote(odd[0])}, which the catalogue does not ask of this section (it "
                f"{listed}); a manifest holds catalogue field names only"
            )
        if len(set(declared)) != len(declared):
            raise ContentError(
                f"{spec.name} section {quote(section)}: the content manifest names a field twice"
            )
        lacking = [f for f in asked if f not in declared]
        if lacking:
            raise ContentError(
                f"{spec.name} content: section {quote(section)} lacks {', '.join(lacking)} "
                f"(its signed content manifest declares "
                f"{', '.join(declared) if declared else 'no field'}); write one 'field: "
                f"value' line per field, or a JSON object, and seal again"
            )
        in_order = [f for f in asked if f in declared]
        if declared != in_order:
            # Any other order would be a channel: a permutation of the catalogue's names
            # carries bits the broker (or anyone who sees descriptors) could read.
            raise ContentError(
                f"{spec.name} section {quote(section)}: the content manifest must list its "
                f"fields in the catalogue's order ({', '.join(in_order)})"
            )


def manifest_lies(
    manifest: Mapping[str, Sequence[str]], sections: Mapping[str, bytes | str]
) -> dict[str, list[str]]:
    """The recipient's check: per opened section, the fields its signed manifest names
    that its content does not hold (empty: the originator told the truth)."""
    out: dict[str, list[str]] = {}
    for section, data in sections.items():
        declared = manifest.get(section, ())
        if not declared:
            continue
        have = fields_in(data)
        absent = [f for f in declared if f not in have]
        if absent:
            out[section] = absent
    return out
