"""The catalogue's content_fields (broker/core/content.py): which fields a section
holds, and the refusal that names the kind, the section and the missing fields."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from broker.bundles import read_bundle_dir
from broker.core.content import (
    ContentError,
    check_content,
    check_manifest,
    fields_in,
    manifest_lies,
    manifest_of,
    missing_fields,
)
from broker.core.policy import compile_bundle
from broker.sandbox import REPO_POLICIES

BUNDLE = compile_bundle(read_bundle_dir(REPO_POLICIES))
RED = BUNDLE.kinds["interpol.red"]
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
VALUES = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1
).filter(lambda v: v.strip() != "")


def test_lines_and_json_objects_carry_fields() -> None:
    assert fields_in(b"family_name: DOE\nforename: John\n") == {"family_name", "forename"}
    assert fields_in("  nationality :  FR  ") == {"nationality"}
    assert fields_in(b'{"offence": "fraud", "summary": "", "x": null}') == {"offence"}
    assert fields_in(b"family_name:\n") == frozenset()  # an empty value is no field
    assert fields_in(b"zzz") == frozenset()
    assert fields_in(b"\xff\xfe") == frozenset()  # not UTF-8: no field, no exception
    assert fields_in(b"{not json") == frozenset()


@given(st.dictionaries(NAMES, VALUES, max_size=8))
def test_every_written_field_is_found(fields: dict[str, str]) -> None:
    lines = "".join(f"{k}: {' '.join(v.split()) or 'x'}\n" for k, v in fields.items())
    assert fields_in(lines.encode()) == set(fields)
    assert fields_in(json.dumps(fields).encode()) == set(fields)


# The definition fields_in keeps: a field per line, with a value.
DEFINITION = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*:\s*(.*?)\s*$")


def _line_by_line(text: str) -> frozenset[str]:
    found = set()
    for line in text.splitlines():
        m = DEFINITION.match(line)
        if m and m.group(2):
            found.add(m.group(1))
    return frozenset(found)


# Lines of names, colons, spaces and values, ended by every line break str.splitlines knows.
_SPACE = st.sampled_from(["", " ", "\t", "\u00a0", "\u3000", "  "])
_LINE = st.tuples(
    _SPACE,
    st.sampled_from(["a", "b_1", "Z9", "9a", "-", "é", ""]),
    _SPACE,
    st.sampled_from([":", "", "::"]),
    _SPACE,
    st.sampled_from(["", "v", "x y", ":", "é"]),
    _SPACE,
    st.sampled_from(
        ["\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", ""]
    ),
).map("".join)


@settings(max_examples=500)
@given(st.lists(_LINE, max_size=8).map("".join))
@example("a:\nb: v\n")
def test_fields_are_the_lines_with_a_value(text: str) -> None:
    if text.strip().startswith("{"):
        return  # JSON objects are read as JSON
    assert fields_in(text) == _line_by_line(text)
    assert fields_in(text.encode()) == _line_by_line(text)


def test_a_red_notice_of_zzz_is_refused_naming_each_field() -> None:
    sections = {"identity": b"zzz", "case_facts": b"zzz", "judicial": b"zzz"}
    with pytest.raises(ContentError) as err:
        check_content(RED, sections)
    text = str(err.value)
    assert text.startswith("interpol.red content: section 'case_facts' lacks offence, summary;")
    assert "section 'identity' lacks family_name, forename, date_of_birth, nationality" in text
    assert "section 'judicial' lacks warrant_reference, issuing_authority" in text


def test_a_complete_notice_passes_and_undeclared_kinds_are_not_checked() -> None:
    sections = {
        "identity": "family_name: DOE\nforename: J\ndate_of_birth: 1970\nnationality: FR",
        "case_facts": '{"offence": "fraud", "summary": "s"}',
        "judicial": "warrant_reference: 1\nissuing_authority: c\npenalty_threshold: 2y",
        "photos": b"\x89PNG",  # a section without declared fields holds anything
    }
    check_content(RED, sections)
    assert missing_fields(RED, {"identity": b"family_name: DOE"}) == {
        "identity": ["forename", "date_of_birth", "nationality"]
    }
    assert missing_fields(RED, {}) == {}  # missing sections are the catalogue check's
    black = BUNDLE.kinds["interpol.black"]
    assert black.content_fields == ()
    check_content(black, {"case_facts": b"zzz"})


# -- the content manifest: what the originator declares, the broker checks on names
# only, and the recipient checks against what it opens.

COMPLETE = {
    "identity": b"family_name: DOE\nforename: J\ndate_of_birth: 1970\nnationality: FR",
    "case_facts": b'{"offence": "fraud", "summary": "s"}',
    "judicial": b"warrant_reference: 1\nissuing_authority: c\npenalty_threshold: 2y",
    "photos": b"\x89PNG",
}


def test_the_manifest_declares_the_catalogue_fields_held_in_catalogue_order() -> None:
    manifest = manifest_of(RED, {**COMPLETE, "case_facts": b"summary: s\nalias: x\noffence: o"})
    assert manifest == {
        "identity": ("family_name", "forename", "date_of_birth", "nationality"),
        "case_facts": ("offence", "summary"),  # catalogue order; "alias" is no catalogue name
        "judicial": ("warrant_reference", "issuing_authority", "penalty_threshold"),
    }  # "photos" declares no fields: none is asked of it
    assert manifest_of(RED, {"identity": b"zzz"}) == {"identity": ()}
    check_manifest(RED, manifest, COMPLETE.keys())


def test_the_broker_refuses_a_manifest_lacking_a_required_field_naming_it() -> None:
    manifest = manifest_of(RED, {**COMPLETE, "identity": b"family_name: DOE\nforename: J"})
    with pytest.raises(ContentError) as err:
        check_manifest(RED, manifest, COMPLETE.keys())
    assert str(err.value).startswith(
        "interpol.red content: section 'identity' lacks date_of_birth, nationality "
        "(its signed content manifest declares family_name, forename)"
    )
    with pytest.raises(ContentError, match="section 'judicial' lacks warrant_reference, "):
        check_manifest(RED, {}, ["judicial"])  # an envelope sealed without a manifest
    check_manifest(RED, {}, ["photos", "biometrics"])  # sections asked for no fields
    check_manifest(BUNDLE.kinds["interpol.black"], {}, ["case_facts"])


def test_the_broker_refuses_names_the_catalogue_does_not_list_so_no_content_leaks() -> None:
    manifest = {**manifest_of(RED, COMPLETE), "identity": ("family_name", "DOE John 1970")}
    with pytest.raises(ContentError) as err:
        check_manifest(RED, manifest, COMPLETE.keys())
    assert "interpol.red section 'identity': the content manifest names 'DOE John 1970'" in str(
        err.value
    )
    long = {"photos": ("x" * 500,)}  # quoted as a short prefix only
    with pytest.raises(ContentError, match="lists no content_fields") as err:
        check_manifest(RED, long, ["photos"])
    assert "x" * 100 not in str(err.value)
    twice = {**manifest_of(RED, COMPLETE), "case_facts": ("offence", "summary", "offence")}
    with pytest.raises(ContentError, match="names a field twice"):
        check_manifest(RED, twice, COMPLETE.keys())


def test_the_broker_refuses_the_catalogue_names_in_another_order() -> None:
    """A permutation of the catalogue's names would carry bits of the originator's own
    (about 8 per Red notice) to whoever sees the descriptors (red-team finding)."""
    manifest = manifest_of(RED, COMPLETE)
    for section, fields in manifest.items():
        if len(fields) < 2:
            continue
        shuffled = {**manifest, section: tuple(reversed(fields))}
        with pytest.raises(ContentError) as err:
            check_manifest(RED, shuffled, COMPLETE.keys())
        assert f"section '{section}': the content manifest must list its fields in the " in (
            str(err.value)
        )
        assert ", ".join(fields) in str(err.value)


def test_the_recipient_finds_a_declared_field_its_section_lacks() -> None:
    manifest = manifest_of(RED, COMPLETE)
    assert manifest_lies(manifest, COMPLETE) == {}
    lying = {**COMPLETE, "identity": b"zzz", "judicial": b"warrant_reference: 1"}
    assert manifest_lies(manifest, lying) == {
        "identity": ["family_name", "forename", "date_of_birth", "nationality"],
        "judicial": ["issuing_authority", "penalty_threshold"],
    }
    assert manifest_lies({}, {"identity": b"zzz"}) == {}  # nothing declared: nothing claimed
    # Only the sections opened are checked: a recipient sees no withheld section.
    assert manifest_lies(manifest, {"case_facts": COMPLETE["case_facts"]}) == {}


def test_sections_a_true_manifest_covers_are_not_read_again_others_are() -> None:
    """missing_fields with `proven` (a manifest manifest_lies found true) skips a section
    only when the manifest names every field the catalogue asks of it."""
    manifest = manifest_of(RED, COMPLETE)
    assert missing_fields(RED, COMPLETE, manifest) == {}
    # A proven manifest that covers the section: skipped, even for content that (were it
    # read) lacks fields, so the skip is real and not a second read agreeing.
    hollow = {**COMPLETE, "identity": b"zzz"}
    assert missing_fields(RED, hollow, manifest) == {}
    assert "identity" in missing_fields(RED, hollow)
    # A manifest that covers only part of what is asked: the section is read.
    identity_fields = dict(RED.content_fields)["identity"]
    partial = {**manifest, "identity": identity_fields[:1]}
    assert missing_fields(RED, hollow, partial) == {"identity": list(identity_fields)}
    assert missing_fields(RED, hollow, {}) == missing_fields(RED, hollow)


@given(st.data())
def test_the_manifest_is_what_the_section_holds_and_the_broker_asks_for_all(
    data: st.DataObject,
) -> None:
    """Any subset of a section's catalogue fields, written in any order with any values:
    the manifest names exactly that subset (catalogue order), the broker accepts it only
    when it is the whole list, and the section never reads as a lie of its manifest."""
    section, wanted = data.draw(st.sampled_from(RED.content_fields))
    held = data.draw(st.lists(st.sampled_from(wanted), unique=True))
    values = data.draw(st.lists(VALUES, min_size=len(held), max_size=len(held)))
    text = "".join(f"{f}: {' '.join(v.split())}\n" for f, v in zip(held, values, strict=True))
    sections = {section: text.encode()}
    manifest = manifest_of(RED, sections)
    assert manifest == {section: tuple(f for f in wanted if f in held)}
    assert manifest_lies(manifest, sections) == {}
    if set(held) == set(wanted):
        check_manifest(RED, manifest, [section])
    else:
        with pytest.raises(ContentError, match=f"section '{section}' lacks "):
            check_manifest(RED, manifest, [section])
