"""Searchable selectors and their canonical forms: the one place that defines them.

A selector is what a border guard or an investigator searches by: a travel
document, a person (name with date of birth), a vehicle (VIN, or plate with
country), a firearm, a phone (IMEI), a bank account (IBAN). Two agencies that
write the same person or number differently must reach the same token, so
every selector is reduced to canonical forms before it enters the OPRF:

- text: Unicode NFKC, then case folding;
- diacritics: stripped (``é`` -> ``e``); letters with a conventional spelling
  out (``ü`` -> ``ue``, ``ø`` -> ``oe``, ``å`` -> ``aa``) give a second variant;
- other scripts: transliterated to Latin by ``anyascii`` (ISC licence); Cyrillic
  also by the ICAO Doc 9303 table and by BGN/PCGN (``Юрий`` -> ``yurii``, ``iurii``,
  ``yuriy``); a Latin spelling is taken as written, so query in the original script
  to cover every romanization;
- names: words sorted, so "DOE, John" and "John Doe" meet; apostrophes dropped
  (O'Brien = OBRIEN), other punctuation separates words;
- dates: ISO 8601, ``DD.MM.YYYY``, ``DD/MM/YYYY``, ``DD-MM-YYYY``, ``YYYYMMDD``
  and ``12 MAR 1980`` all become ``1980-03-12`` (day first, as in Europe and in
  passports; a calendar date is required);
- document numbers: letters and digits only (spaces, ``-``, ``.``, MRZ ``<``
  dropped), with the issuing country (ISO 3166-1 alpha-2) and document type;
- VIN: ISO 3779 never uses I, O, Q, so they are read as 1, 0, 0;
- IMEI: the Luhn check digit is verified (14 digits get it computed; a 16-digit
  IMEISV is reduced to its IMEI); IBAN: the ISO 13616 mod-97 check is verified.

A selector may give several canonical forms (variants), first the primary one;
publishing indexes every variant and a lookup asks for every variant, so a hit
needs only one in common. The OPRF input is :func:`oprf_input` of a form, which
starts with the selector type, so a number never matches the same digits under
another type.

Pure: no I/O. Bad input raises :class:`SelectorError` (an InvalidArgument)
that says what to fix.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from anyascii import anyascii

from broker.errors import InvalidArgument

INPUT_CONTEXT: Final = b"broker.v1 selector\x00"
MAX_FIELD = 256
MAX_VARIANTS = 8


class SelectorError(InvalidArgument):
    """A selector that is malformed or fails its check digits."""


@dataclass(frozen=True)
class Selector:
    """A selector as given: its type and its fields (e.g. number, country, type)."""

    type: str
    fields: tuple[tuple[str, str], ...]

    def field(self, name: str) -> str:
        for k, v in self.fields:
            if k == name:
                return v
        raise SelectorError(f"a {self.type} selector needs {name}")


# -- text --------------------------------------------------------------------------------

_SPELLED_OUT: Final = {
    "ä": "ae",
    "ö": "oe",
    "ü": "ue",
    "ø": "oe",
    "æ": "ae",
    "å": "aa",
    "œ": "oe",
    "þ": "th",
}
# ICAO Doc 9303 Part 3, Table: transliteration of Cyrillic characters.
_ICAO_CYRILLIC: Final = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяіїєґўђјљњћџѕ",
        (
            "a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "i", "k", "l", "m", "n", "o",
            "p", "r", "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "ie", "y", "", "e",
            "iu", "ia", "i", "i", "ie", "g", "u", "d", "j", "lj", "nj", "c", "dz", "dz",
        ),
        strict=True,
    )
)  # fmt: skip
# BGN/PCGN romanization of Russian, the spelling English-language records use ("Yuriy").
_BGN_RUSSIAN: Final = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
        (
            "a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "y", "k", "l", "m", "n", "o",
            "p", "r", "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e",
            "yu", "ya",
        ),
        strict=True,
    )
)  # fmt: skip


def _clean(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise SelectorError(f"{what} must be text")
    if len(text) > MAX_FIELD:
        raise SelectorError(f"{what} is longer than {MAX_FIELD} characters")
    return unicodedata.normalize("NFKC", text).casefold()


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def _latin(text: str) -> str:
    return anyascii(_strip_marks(text)).lower()


def text_variants(text: str, what: str) -> tuple[str, ...]:
    """Latin lower-case spellings of ``text``, the plainest first, without duplicates."""
    folded = re.sub(r"['’ʼ`´]", "", _clean(text, what))  # O'Brien = OBrien
    variants = [_latin(folded)]
    spelled = "".join(_SPELLED_OUT.get(c, c) for c in unicodedata.normalize("NFC", folded))
    variants.append(_latin(spelled))
    if any(c in _ICAO_CYRILLIC for c in folded):
        variants.append(_latin("".join(_ICAO_CYRILLIC.get(c, c) for c in folded)))
        variants.append(_latin("".join(_BGN_RUSSIAN.get(c, c) for c in folded)))
    return tuple(dict.fromkeys(variants))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text)


def _alnum(text: str, what: str) -> str:
    out = "".join(_words(_latin(_clean(text, what)))).upper()
    if not out:
        raise SelectorError(f"{what} has no letters or digits")
    return out


# -- dates -------------------------------------------------------------------------------

_MONTHS: Final = {
    name: i + 1
    for i, names in enumerate(
        [
            ("jan", "january", "janvier"),
            ("feb", "february", "fev", "fevrier"),
            ("mar", "march", "mars"),
            ("apr", "april", "avr", "avril"),
            ("may", "mai"),
            ("jun", "june", "juin"),
            ("jul", "july", "juil", "juillet"),
            ("aug", "august", "aout"),
            ("sep", "sept", "september", "septembre"),
            ("oct", "october", "octobre"),
            ("nov", "november", "novembre"),
            ("dec", "december", "decembre"),
        ]
    )
    for name in names
}


def _days_in(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def canonical_date(text: str) -> str:
    """Return ``YYYY-MM-DD`` for a date of birth in one of the accepted formats."""
    t = _latin(_clean(text, "date of birth")).strip()
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", t) or re.fullmatch(r"(\d{4})(\d{2})(\d{2})", t)
    if m:
        year, month, day = int(m[1]), int(m[2]), int(m[3])
    elif m := re.fullmatch(r"(\d{1,2})[./-](\d{1,2})[./-](\d{4})", t):
        day, month, year = int(m[1]), int(m[2]), int(m[3])
    elif m := re.fullmatch(r"(\d{1,2})[ .-]*([a-z]+)\.?[ .-]*(\d{4})", t):
        if m[2] not in _MONTHS:
            raise SelectorError(f"date of birth {text!r}: unknown month {m[2]!r}")
        day, month, year = int(m[1]), _MONTHS[m[2]], int(m[3])
    else:
        raise SelectorError(
            f"date of birth {text!r}: use YYYY-MM-DD, DD.MM.YYYY, DD/MM/YYYY or 12 MAR 1980"
        )
    if not (1800 <= year <= 2999 and 1 <= month <= 12 and 1 <= day <= _days_in(year, month)):
        raise SelectorError(f"date of birth {text!r} is not a calendar date")
    return f"{year:04d}-{month:02d}-{day:02d}"


# -- check digits ------------------------------------------------------------------------


def luhn_digit(digits: str) -> str:
    """The Luhn check digit to append to ``digits``."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return str((10 - total % 10) % 10)


def iban_valid(iban: str) -> bool:
    """ISO 13616 / ISO 7064 mod 97-10: True when the IBAN's check digits are right."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# -- the selector types ------------------------------------------------------------------

_DOCUMENT_TYPES: Final = {
    "p": "P",
    "passport": "P",
    "i": "I",
    "id": "I",
    "id_card": "I",
    "identity_card": "I",
    "r": "R",
    "residence_permit": "R",
    "v": "V",
    "visa": "V",
    "d": "D",
    "driving_licence": "D",
}


def _country(text: str) -> str:
    c = _clean(text, "country").strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", c):
        raise SelectorError(f"country {text!r}: use the ISO 3166-1 alpha-2 code, e.g. FR")
    return c


def _document(s: Selector) -> list[str]:
    doc_type = _DOCUMENT_TYPES.get(_clean(s.field("type"), "document type").strip())
    if doc_type is None:
        raise SelectorError(
            f"document type {s.field('type')!r}: use P (passport), I (identity card), "
            "R (residence permit), V (visa) or D (driving licence)"
        )
    number = _alnum(s.field("number"), "document number")
    if len(number) > 20:
        raise SelectorError("a document number has at most 20 letters and digits")
    return [f"document:{_country(s.field('country'))}:{doc_type}:{number}"]


def _person(s: Selector) -> list[str]:
    dob = canonical_date(s.field("date_of_birth"))
    out = []
    for variant in text_variants(s.field("name"), "name"):
        words = sorted(_words(variant))
        if not words:
            raise SelectorError("a name needs letters")
        out.append(f"person:{' '.join(words)}:{dob}")
    return out


def _vin(s: Selector) -> list[str]:
    vin = _alnum(s.field("vin"), "VIN").translate(str.maketrans("IOQ", "100"))
    if len(vin) != 17:
        raise SelectorError(f"a VIN has 17 letters and digits, not {len(vin)}")
    return [f"vin:{vin}"]


def _plate(s: Selector) -> list[str]:
    return [f"plate:{_country(s.field('country'))}:{_alnum(s.field('plate'), 'plate')}"]


def _firearm(s: Selector) -> list[str]:
    make = " ".join(_words(_latin(_clean(s.field("make"), "firearm make"))))
    if not make:
        raise SelectorError("a firearm make needs letters or digits")
    return [f"firearm:{make}:{_alnum(s.field('serial'), 'firearm serial')}"]


def _imei(s: Selector) -> list[str]:
    digits = re.sub(r"[\s./-]", "", _clean(s.field("imei"), "IMEI"))
    if not digits.isdigit() or not digits.isascii():
        raise SelectorError("an IMEI has digits only")
    if len(digits) in (14, 16):  # no check digit, or an IMEISV (14 digits + 2 of software)
        digits = digits[:14] + luhn_digit(digits[:14])
    elif len(digits) != 15:
        raise SelectorError(
            f"an IMEI has 15 digits (14 without the check digit), not {len(digits)}"
        )
    elif luhn_digit(digits[:14]) != digits[14]:
        raise SelectorError("the IMEI's check digit is wrong: check the number")
    return [f"imei:{digits}"]


def _iban(s: Selector) -> list[str]:
    iban = _alnum(s.field("iban"), "IBAN")
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", iban):
        raise SelectorError("an IBAN is a country code, 2 check digits and 11 to 30 characters")
    if not iban_valid(iban):
        raise SelectorError("the IBAN's check digits are wrong: check the number")
    return [f"iban:{iban}"]


@dataclass(frozen=True)
class SelectorType:
    """A type of selector: its fields (in the order the text syntax takes them)."""

    name: str
    fields: tuple[str, ...]
    description: str
    forms: Callable[[Selector], list[str]]


SELECTOR_TYPES: Final[Mapping[str, SelectorType]] = {
    t.name: t
    for t in (
        SelectorType(
            "travel_document",
            ("country", "type", "number"),
            "travel document: issuing country, type, number",
            _document,
        ),
        SelectorType("person", ("name", "date_of_birth"), "name with date of birth", _person),
        SelectorType("vin", ("vin",), "vehicle identification number (ISO 3779)", _vin),
        SelectorType("plate", ("country", "plate"), "registration plate with country", _plate),
        SelectorType("firearm", ("make", "serial"), "firearm make and serial number", _firearm),
        SelectorType("imei", ("imei",), "mobile device IMEI", _imei),
        SelectorType("iban", ("iban",), "bank account IBAN", _iban),
    )
}


def selector_type(name: str) -> SelectorType:
    """Return the type named ``name`` or raise SelectorError listing the known ones."""
    t = SELECTOR_TYPES.get(name)
    if t is None:
        raise SelectorError(
            f"unknown selector type {name!r}: use one of {', '.join(SELECTOR_TYPES)}"
        )
    return t


def make_selector(type_name: str, fields: Mapping[str, str]) -> Selector:
    """Build a selector from named fields; raise SelectorError for unknown or missing ones."""
    t = selector_type(type_name)
    extra = sorted(set(fields) - set(t.fields))
    if extra:
        raise SelectorError(f"a {t.name} selector has no field {extra[0]!r}: {', '.join(t.fields)}")
    missing = [f for f in t.fields if not str(fields.get(f, "")).strip()]
    if missing:
        raise SelectorError(f"a {t.name} selector needs {', '.join(missing)}")
    return Selector(t.name, tuple((f, str(fields[f])) for f in t.fields))


def parse_selector(text: str) -> Selector:
    """Parse ``TYPE=FIELD;FIELD...`` (fields in the type's order), e.g.
    ``travel_document=FR;P;12AB34567`` or ``person=DOE, John;1980-03-12``."""
    type_name, sep, rest = text.partition("=")
    t = selector_type(type_name.strip())
    if not sep:
        raise SelectorError(f"write a selector as {t.name}={';'.join(t.fields).upper()}")
    values = rest.split(";")
    if len(values) != len(t.fields):
        raise SelectorError(
            f"a {t.name} selector takes {len(t.fields)} field(s) separated by ';': "
            f"{';'.join(t.fields)}"
        )
    return make_selector(t.name, dict(zip(t.fields, values, strict=True)))


def canonical_forms(selector: Selector) -> tuple[str, ...]:
    """The canonical forms of a selector, primary first (at most MAX_VARIANTS)."""
    forms = selector_type(selector.type).forms(selector)
    return tuple(dict.fromkeys(forms))[:MAX_VARIANTS]


def oprf_input(form: str) -> bytes:
    """The OPRF input for one canonical form."""
    return INPUT_CONTEXT + form.encode("utf-8")


def all_forms(selectors: Iterable[Selector]) -> list[tuple[str, str]]:
    """(selector type, canonical form) for every variant of every selector, deduplicated."""
    seen: dict[str, str] = {}
    for s in selectors:
        for form in canonical_forms(s):
            seen.setdefault(form, s.type)
    return [(t, f) for f, t in seen.items()]
