"""The catalogue's content_fields (broker/core/content.py): which fields a section
holds, and the refusal that names the kind, the section and the missing fields."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.bundles import read_bundle_dir
from broker.core.content import ContentError, check_content, fields_in, missing_fields
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
