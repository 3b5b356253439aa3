"""Canonical forms of selectors: two spellings of the same thing meet, bad input is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core.selectors import (
    SELECTOR_TYPES,
    SelectorError,
    all_forms,
    canonical_date,
    canonical_forms,
    luhn_digit,
    make_selector,
    oprf_input,
    parse_selector,
)


def forms(text: str) -> set[str]:
    return set(canonical_forms(parse_selector(text)))


# Pairs written differently by two agencies that must share at least one form.
SAME = [
    ("person=DOE, John;1980-03-12", "person=john doe;12.03.1980"),
    ("person=John DOE;12/03/1980", "person=Doe John;19800312"),
    ("person=DOE John;12 MAR 1980", "person=doe   john;12 mars 1980"),
    ("person=José ÁLVAREZ;1990-02-28", "person=Jose Alvarez;28.02.1990"),
    ("person=Jürgen Müller;1975-01-02", "person=Juergen Mueller;02.01.1975"),
    ("person=Jürgen Müller;1975-01-02", "person=Jurgen Muller;02.01.1975"),
    ("person=Straße Anna;1975-01-02", "person=Anna STRASSE;1975-01-02"),
    ("person=Søren Kierkegård;1985-05-05", "person=Soeren Kierkegaard;05.05.1985"),
    ("person=Юрий Гагарин;1934-03-09", "person=Yuriy Gagarin;09.03.1934"),
    ("person=Юрий Гагарин;1934-03-09", "person=GAGARIN IURII;09.03.1934"),
    ("person=ＤＯＥ Ｊｏｈｎ;1980-03-12", "person=DOE John;1980-03-12"),  # NFKC: full width
    ("person=O'Brien Seán;1970-07-07", "person=OBRIEN SEAN;07.07.1970"),
    ("travel_document=FR;P;12AB34567", "travel_document=fr;passport;12 ab-345.67"),
    ("travel_document=DE;I;L01X00T47", "travel_document=de;id_card;L01X00T47<<<"),
    ("vin=1HGCM82633A004352", "vin=1hgcm-8263 3a00 4352"),
    ("vin=1HGCM82633A004352", "vin=1HGCM82633AOO4352"),  # O read as 0
    ("plate=FR;AB-123-CD", "plate=fr;ab 123 cd"),
    ("firearm=Glock GmbH;ABC 123", "firearm=GLOCK  gmbh;abc-123"),
    ("imei=490154203237518", "imei=49-015420-323751-8"),
    ("imei=490154203237518", "imei=49015420323751"),  # no check digit given
    ("imei=490154203237518", "imei=4901542032375123"),  # IMEISV
    ("iban=DE89 3704 0044 0532 0130 00", "iban=de89370400440532013000"),
]

DIFFERENT = [
    ("person=DOE John;1980-03-12", "person=DOE John;1980-12-03"),
    ("person=DOE John;1980-03-12", "person=DOE Jane;1980-03-12"),
    ("travel_document=FR;P;12AB34567", "travel_document=BE;P;12AB34567"),
    ("travel_document=FR;P;12AB34567", "travel_document=FR;I;12AB34567"),
    ("plate=FR;AB123CD", "plate=BE;AB123CD"),
    ("firearm=Glock;123", "firearm=Beretta;123"),
]

BAD = [
    ("person=DOE John;1980-02-30", "not a calendar date"),
    ("person=DOE John;13/13/1980", "not a calendar date"),
    ("person=DOE John;03/12/80", "use YYYY-MM-DD"),
    ("person=DOE John;12 FOO 1980", "unknown month"),
    ("person=...;1980-01-01", "needs letters"),
    ("person=DOE John", "2 field"),
    ("travel_document=FRA;P;123", "alpha-2"),
    ("travel_document=FR;X;123", "document type"),
    ("travel_document=FR;P;---", "no letters or digits"),
    ("vin=1HGCM8263", "17 letters"),
    ("imei=490154203237519", "check digit"),
    ("imei=4901542032", "15 digits"),
    ("imei=49015420323751A", "digits only"),
    ("iban=DE88370400440532013000", "check digits"),
    ("iban=DE89", "IBAN is"),
    ("passport=123", "unknown selector type"),
    ("vin", "write a selector as"),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_two_spellings_meet(a: str, b: str) -> None:
    assert forms(a) & forms(b), (forms(a), forms(b))


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_selectors_stay_apart(a: str, b: str) -> None:
    assert not forms(a) & forms(b)


@pytest.mark.parametrize(("text", "error"), BAD)
def test_bad_selectors_are_refused_with_what_to_fix(text: str, error: str) -> None:
    with pytest.raises(SelectorError, match=error):
        canonical_forms(parse_selector(text))


def test_exact_canonical_forms() -> None:
    assert canonical_forms(parse_selector("person=DOE, John;12.03.1980")) == (
        "person:doe john:1980-03-12",
    )
    assert canonical_forms(parse_selector("person=Jürgen Müller;1975-01-02")) == (
        "person:jurgen muller:1975-01-02",
        "person:juergen mueller:1975-01-02",
    )
    assert canonical_forms(parse_selector("person=Юрий Гагарин;1934-03-09")) == (
        "person:gagarin yurii:1934-03-09",
        "person:gagarin iurii:1934-03-09",
        "person:gagarin yuriy:1934-03-09",
    )
    assert canonical_forms(parse_selector("travel_document=fr;passport;12 ab-34567")) == (
        "document:FR:P:12AB34567",
    )
    assert canonical_forms(parse_selector("iban=DE89 3704 0044 0532 0130 00")) == (
        "iban:DE89370400440532013000",
    )


def test_dates_and_check_digits() -> None:
    assert canonical_date("2000-02-29") == "2000-02-29"  # leap year
    with pytest.raises(SelectorError):
        canonical_date("1900-02-29")  # not a leap year
    assert luhn_digit("49015420323751") == "8"


def test_the_oprf_input_names_the_type() -> None:
    # The same digits as an IMEI and as a document number are different inputs.
    imei = canonical_forms(parse_selector("imei=490154203237518"))[0]
    doc = canonical_forms(parse_selector("travel_document=FR;P;490154203237518"))[0]
    assert oprf_input(imei) != oprf_input(doc)
    assert oprf_input(imei).startswith(b"broker.v1 selector\x00imei:")


def test_make_selector_checks_fields() -> None:
    with pytest.raises(SelectorError, match="no field"):
        make_selector("vin", {"vin": "x", "colour": "red"})
    with pytest.raises(SelectorError, match="needs number"):
        make_selector("travel_document", {"country": "FR", "type": "P"})
    s = make_selector("vin", {"vin": "1HGCM82633A004352"})
    assert all_forms([s, s]) == [("vin", "vin:1HGCM82633A004352")]


@given(
    st.sampled_from(sorted(SELECTOR_TYPES)), st.lists(st.text(max_size=40), min_size=3, max_size=3)
)
def test_any_text_gives_forms_or_a_selector_error(type_name: str, values: list[str]) -> None:
    fields = SELECTOR_TYPES[type_name].fields
    try:
        out = canonical_forms(make_selector(type_name, dict(zip(fields, values, strict=False))))
    except SelectorError:
        return
    prefix = "document:" if type_name == "travel_document" else f"{type_name}:"
    assert out and all(f.startswith(prefix) for f in out)
    assert all(f.isprintable() and f.isascii() for f in out)
