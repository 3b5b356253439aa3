"""Labels of the catalogue's fields (``[labels.fields]``): every content field a kind's
content_fields name, and every header field a kind requires, in all four languages;
a label for a field the catalogue does not name is refused at its file:line:column."""

from __future__ import annotations

import re

import pytest

from broker.core.policy.labels import LANGUAGES
from broker.core.policy.model import HEADER_FIELDS
from broker.core.policy.source import PolicyError, parse_catalogue

from .helpers import shipped

BASE = """
[purposes]
locate = "Locate"
[sections]
identity = "Identity"
[authorities]
police = "Police"
[kinds."k.person"]
sections = ["identity"]
purposes = ["locate"]
data_subjects = ["suspect"]
required_header_fields = ["data_subject"]
retention_days = 10
review_days = 5
[kinds."k.person".content_fields]
identity = ["family_name", "forename"]
"""


def label(name: str, *, skip: str = "") -> str:
    lines = [f"[labels.fields.{name}]"]
    lines += [f'{lang} = "{name} {lang}"' for lang in LANGUAGES if lang != skip]
    return "\n".join(lines) + "\n"


ALL = label("family_name") + label("forename") + label("data_subject")


def parse(text: str) -> object:
    return parse_catalogue("catalogue.toml", text.encode())


def test_field_labels_are_parsed() -> None:
    cat = parse(BASE + ALL)
    assert cat.labels.label("fields", "forename", "ar") == "forename ar"  # type: ignore[attr-defined]
    assert cat.labels.label("fields", "family_name", "fr") == "family_name fr"  # type: ignore[attr-defined]


def test_a_field_label_missing_a_language_is_refused_at_its_table() -> None:
    text = BASE + label("family_name", skip="es") + label("forename") + label("data_subject")
    with pytest.raises(PolicyError, match="missing es") as err:
        parse(text)
    line = text.splitlines().index("[labels.fields.family_name]") + 1
    assert str(err.value).startswith(f"catalogue.toml:{line}:1: labels.fields.family_name")


def test_a_label_for_a_field_the_catalogue_does_not_name_is_refused_at_its_table() -> None:
    text = BASE + ALL + label("shoe_size")
    with pytest.raises(PolicyError, match="fields has no 'shoe_size'") as err:
        parse(text)
    line = text.splitlines().index("[labels.fields.shoe_size]") + 1
    assert re.match(rf"catalogue\.toml:{line}:\d+: ", str(err.value)), err.value


@pytest.mark.parametrize("name", ["forename", "data_subject"])
def test_every_content_and_required_header_field_needs_a_label(name: str) -> None:
    text = BASE + ALL.replace(label(name), "")
    with pytest.raises(PolicyError, match=f"labels.fields needs a label for '{name}'"):
        parse(text)


def test_a_header_field_no_kind_requires_may_be_labelled() -> None:
    cat = parse(BASE + ALL + label("handling_codes"))
    assert cat.labels.has("fields", "handling_codes")  # type: ignore[attr-defined]


def test_a_catalogue_without_content_fields_or_requests_needs_no_field_labels() -> None:
    text = BASE.partition('[kinds."k.person".content_fields]')[0]
    assert not parse(text).labels.has("fields", "data_subject")  # type: ignore[attr-defined]


def test_every_shipped_field_is_labelled_in_four_languages() -> None:
    cat = shipped().catalogue
    named = {f for k in cat.kinds.values() for _, fields in k.content_fields for f in fields}
    named |= {h for k in cat.kinds.values() for h in k.required_header_fields}
    assert len(named) >= 15 and set(HEADER_FIELDS) & named  # the catalogue has both kinds
    for name in sorted(named | set(HEADER_FIELDS)):
        assert cat.labels.has("fields", name), f"label fields.{name} in catalogue.toml"
        texts = [cat.labels.label("fields", name, lang) for lang in LANGUAGES]
        assert len(set(texts)) >= 3 and name not in texts, (name, texts)
    assert cat.labels.label("fields", "family_name", "fr") == "Nom de famille"
    assert cat.labels.label("fields", "forename", "es") == "Nombre"
    assert cat.labels.label("fields", "date_of_birth", "ar") == "تاريخ الميلاد"
