"""The catalogue's request kinds and labels: parsed, validated with located errors, and
the shipped catalogue's legal time limits and refusal grounds."""

from __future__ import annotations

import pytest

from broker.core.policy.labels import LANGUAGES, check_language
from broker.core.policy.requestkinds import STATES, STEPS
from broker.core.policy.source import PolicyError, parse_catalogue

from .helpers import shipped

HOURS_PER_DAY = 24

BASE = """
[purposes]
investigation = "Investigate"
[sections]
request = "The request"
[authorities]
judicial = "Judicial"
[kinds."request.x"]
sections = ["request"]
purposes = ["investigation"]
retention_days = 10
review_days = 5
"""
REQUEST = """
[kinds."request.x".request]
instrument = "Instrument"
grounds = ["x.1"]
[kinds."request.x".request.deadlines.normal]
decision_hours = 720
execution_hours = 2160
remind_hours = 24
[kinds."request.x".request.deadlines.urgent]
decision_hours = 24
execution_hours = 720
"""


def labels(*names: tuple[str, str], skip: str = "") -> str:
    out = []
    for category, name in names:
        out.append(f'[labels.{category}."{name}"]')
        out += [f'{lang} = "{name} {lang}"' for lang in LANGUAGES if lang != skip]
    return "\n".join(out) + "\n"


LIFECYCLE = (
    [("states", s) for s in STATES]
    + [("steps", s) for s in STEPS]
    + [("priorities", "normal"), ("priorities", "urgent")]
    + [("deadlines", d) for d in ("decision", "execution", "overdue")]
)
ALL_LABELS = labels(("kinds", "request.x"), ("sections", "request"), ("grounds", "x.1"), *LIFECYCLE)


def parse(text: str) -> object:
    return parse_catalogue("catalogue.toml", text.encode())


def test_a_request_kind_is_parsed_with_its_labels() -> None:
    cat = parse(BASE + REQUEST + ALL_LABELS)
    spec = cat.requests["request.x"]  # type: ignore[attr-defined]
    assert spec.grounds == ("x.1",)
    assert spec.limits("urgent").decision_hours == 24
    assert spec.limits("normal").execution_from == "decision"
    assert cat.labels.label("grounds", "x.1", "ar") == "x.1 ar"  # type: ignore[attr-defined]
    assert cat.labels.label("kinds", "nothing", "fr") == "nothing"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (BASE + ALL_LABELS, "is a request kind and needs a request table"),
        (BASE + REQUEST.replace('grounds = ["x.1"]', "grounds = []") + ALL_LABELS, "must list"),
        (
            BASE + REQUEST.replace("decision_hours = 24", "decision_hours = 9000") + ALL_LABELS,
            "urgent decision_hours must not exceed normal",
        ),
        (
            BASE + REQUEST.replace("execution_hours = 720", "execution_hours = 0") + ALL_LABELS,
            "must be an integer from 1",
        ),
        (
            BASE + REQUEST.replace("remind_hours = 24", 'execution_from = "later"') + ALL_LABELS,
            "execution_from must be decision or receipt",
        ),
        (
            BASE + REQUEST.replace('[kinds."request.x".request.deadlines.urgent]', "[x]"),
            "unknown table",
        ),
        (BASE + REQUEST + ALL_LABELS.replace('ar = "x.1 ar"\n', ""), "missing ar"),
        (BASE + REQUEST + labels(("kinds", "request.x")), "needs a label for"),
        (BASE + REQUEST + ALL_LABELS + labels(("grounds", "y.9")), "has no 'y.9'"),
        (BASE + REQUEST + ALL_LABELS + '[labels.colours.red]\nen = "red"\n', "unknown category"),
    ],
)
def test_bad_request_tables_are_refused(text: str, error: str) -> None:
    with pytest.raises(PolicyError, match=error):
        parse(text)


def test_only_request_kinds_take_a_request_table() -> None:
    text = BASE.replace("request.x", "sis.x") + REQUEST.replace("request.x", "sis.x")
    with pytest.raises(PolicyError, match=r"only request\.\* kinds take a request table"):
        parse(text)


def test_the_shipped_time_limits_follow_the_instruments() -> None:
    requests = shipped().catalogue.requests
    eio, eaw = requests["request.eio"], requests["request.eaw"]
    production = requests["request.production"]
    # EIO Directive 2014/41/EU Art. 12(3)-(4): 30 days to recognise, 90 to execute.
    assert eio.limits("normal").decision_hours == 30 * HOURS_PER_DAY
    assert eio.limits("normal").execution_hours == 90 * HOURS_PER_DAY
    # EAW Framework Decision Art. 17: 60 days, 10 days after consent.
    assert eaw.limits("normal").decision_hours == 60 * HOURS_PER_DAY
    assert eaw.consent_decision_hours == 10 * HOURS_PER_DAY
    # Reg. (EU) 2023/1543 Art. 10: 10 days, 8 hours in emergencies, from receipt.
    assert production.limits("normal").execution_hours == 10 * HOURS_PER_DAY
    assert production.limits("urgent").execution_hours == 8
    assert production.limits("urgent").execution_from == "receipt"
    # Art. 11(1) of the EIO Directive: grounds (a) to (h).
    assert eio.grounds == tuple(f"eio.11.1.{c}" for c in "abcdefgh")
    assert set(requests) == {
        "request.mla",
        "request.eio",
        "request.eaw",
        "request.preservation",
        "request.production",
        "request.transfer_proceedings",
    }


def test_the_shipped_labels_cover_four_languages() -> None:
    cat = shipped().catalogue
    for spec in cat.requests.values():
        names = [("kinds", spec.kind)] + [("grounds", g) for g in spec.grounds]
        names += [("measures", m) for m in spec.measures]
        names += [("sections", s) for s in cat.kinds[spec.kind].sections]
        for category, name in names:
            texts = {lang: cat.labels.label(category, name, lang) for lang in LANGUAGES}
            assert len(set(texts.values())) >= 2, (category, name)  # not all English
            assert all(t != name for t in texts.values()), (category, name)
    assert cat.labels.label("states", "refused", "fr") == "Refusée"
    assert cat.labels.label("kinds", "request.eaw", "es") == "Orden de detención europea"
    assert cat.labels.label("kinds", "request.eio", "ar") == "أمر التحقيق الأوروبي"


def test_a_language_outside_the_four_is_refused() -> None:
    assert check_language("ar") == "ar"
    with pytest.raises(ValueError, match="use one of en, fr, es, ar"):
        check_language("de")


def test_every_shipped_kind_and_section_is_labelled() -> None:
    cat = shipped().catalogue
    missing = [("kinds", k) for k in cat.kinds if not cat.labels.has("kinds", k)]
    missing += [("sections", s) for s in cat.sections if not cat.labels.has("sections", s)]
    assert missing == [], "label these in catalogue.toml [labels] (en, fr, es, ar)"
