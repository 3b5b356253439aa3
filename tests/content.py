"""Section contents that satisfy the catalogue, for tests that publish.

The SDK (NodeConfig.check_content, on by default) and the broker (the signed content
manifest, broker/core/content.py) refuse a section lacking a field its kind's catalogue
entry asks for, so a test that publishes an interpol.red, .yellow, .blue, sis.art26 or
.art38 notice writes its sections with `sections_for`: one 'field: value' line per
field the shipped catalogue (policies/catalogue.toml) asks of the section, then any
free text the test wants to recognise it by.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from broker.core.policy.model import KindSpec


@cache
def _kinds() -> dict[str, KindSpec]:
    from broker.bundles import read_bundle_dir
    from broker.core.policy import compile_bundle
    from broker.sandbox import REPO_POLICIES

    return dict(compile_bundle(read_bundle_dir(REPO_POLICIES)).kinds)


def fields_of(kind: str, section: str) -> tuple[str, ...]:
    """The fields the shipped catalogue asks of `section` in a `kind` notice."""
    return dict(_kinds()[kind].content_fields).get(section, ())


def section_for(kind: str, section: str, text: str | bytes = b"") -> bytes:
    """`section`'s content: a 'field: value' line per catalogue field, then `text`."""
    lines = b"".join(f"{f}: {section} {f}\n".encode() for f in fields_of(kind, section))
    extra = text.encode() if isinstance(text, str) else text
    return lines + extra if lines or extra else f"{section} of a {kind} notice".encode()


def sections_for(
    kind: str, names: Iterable[str] | None = None, **texts: str | bytes
) -> dict[str, bytes]:
    """Valid contents for `names` (default: the kind's required sections, and every
    section named in `texts`); `texts` adds free text to a section by name."""
    chosen = list(names) if names is not None else list(_kinds()[kind].required_sections)
    chosen += [n for n in texts if n not in chosen]
    return {n: section_for(kind, n, texts.get(n, b"")) for n in chosen}


def manifest_for(kind: str, sections: dict[str, bytes]) -> dict[str, tuple[str, ...]]:
    """The content manifest an honest SDK declares for `sections` (hand-built envelopes)."""
    from broker.core.content import manifest_of

    spec = _kinds().get(kind)
    return manifest_of(spec, sections) if spec is not None else {}
