"""The console's languages without a browser: label lookup and its fallbacks, how a term
is shown (label, identifier, escaping), how the language is chosen, the selector's links,
the console's own words, and where the labels come from (the policy in force)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from broker.bundles import read_bundle_dir
from broker.cli.main import build_parser
from broker.console import lang, words
from broker.console.config import ConsoleConfig
from broker.core.policy import compile_bundle
from broker.core.policy.labels import LANGUAGES, Labels
from broker.errors import InvalidArgument
from broker.sandbox import REPO_POLICIES
from broker.v1 import audit_pb2

LABELS = Labels(
    {
        "kinds": {
            "interpol.red": {
                "en": "INTERPOL Red Notice",
                "fr": "Notice rouge d'INTERPOL",
                "es": "Notificación roja de INTERPOL",
                "ar": "النشرة الحمراء للإنتربول",
            },
            "only.english": {"en": "Only English", "fr": ""},
        },
        "states": {"received": {"en": "Received", "fr": "Reçue", "es": "Recibida", "ar": "مستلَم"}},
        "sections": {"evil": {"en": "<script>alert(1)</script>", "fr": 'a"b'}},
    }
)


def test_a_label_falls_back_to_english_then_to_the_identifier() -> None:
    assert LABELS.label("kinds", "interpol.red", "fr") == "Notice rouge d'INTERPOL"
    assert LABELS.label("kinds", "interpol.red", "ar") == "النشرة الحمراء للإنتربول"
    assert LABELS.label("kinds", "only.english", "fr") == "Only English"  # empty French
    assert LABELS.label("kinds", "only.english", "es") == "Only English"  # no Spanish
    assert LABELS.label("kinds", "sis.unknown", "fr") == "sis.unknown"  # no label at all
    assert LABELS.label("measures", "hearing", "fr") == "hearing"  # no such category
    speech = lang.Speech("es", LABELS)
    assert speech.label("kinds", "interpol.red") == "Notificación roja de INTERPOL"
    assert lang.Speech("fr", Labels()).label("kinds", "interpol.red") == "interpol.red"


def test_a_term_shows_its_label_and_keeps_the_identifier_visible() -> None:
    fr = lang.Speech("fr", LABELS)
    html = str(fr.term("kinds", "interpol.red"))
    assert html == (
        '<span class="term" data-id="interpol.red" title="interpol.red">'
        "<bdi>Notice rouge d&#39;INTERPOL</bdi> "
        '<small class="id"><bdi>interpol.red</bdi></small></span>'
    )
    # No label: the identifier alone; a label that only restates it: no second copy.
    assert str(fr.term("kinds", "x.y")) == '<span class="term" data-id="x.y"><bdi>x.y</bdi></span>'
    en = str(lang.Speech("en", LABELS).term("states", "received"))
    assert "<bdi>Received</bdi>" in en and "small" not in en and 'title="received"' in en
    assert fr.option("kinds", "interpol.red") == "Notice rouge d'INTERPOL (interpol.red)"
    assert fr.option("kinds", "x.y") == "x.y"


def test_labels_are_escaped_like_everything_else() -> None:
    html = str(lang.Speech("en", LABELS).term("sections", "evil"))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "a&#34;b" in str(lang.Speech("fr", LABELS).term("sections", "evil"))


def test_lists_of_terms_use_the_languages_comma() -> None:
    names = ["interpol.red", "x.y"]
    assert str(lang.Speech("en", Labels()).terms("kinds", names)).count(", ") == 1
    assert "، " in str(lang.Speech("ar", Labels()).terms("kinds", names))


def test_arabic_pages_are_right_to_left() -> None:
    assert [lang.Speech(code, Labels()).dir for code in LANGUAGES] == ["ltr", "ltr", "ltr", "rtl"]


def test_the_query_chooses_the_language_then_the_cookie_then_the_default() -> None:
    assert lang.choose("ar", None, "en") == ("ar", True)  # remembered for the next pages
    assert lang.choose("ar", "ar", "en") == ("ar", False)  # already remembered
    assert lang.choose(None, "es", "en") == ("es", False)
    assert lang.choose(None, "xx", "fr") == ("fr", False)  # a cookie naming none is ignored
    assert lang.choose(None, None, "fr") == ("fr", False)
    for bad in ("de", "", "EN", "fr-FR", "<b>x</b>"):
        with pytest.raises(lang.UnknownLanguage) as refused:
            lang.choose(bad, "es", "en")
        assert "en, fr, es, ar" in str(refused.value)
        assert bad not in str(refused.value) or not bad  # never echoed back


def test_the_selector_keeps_the_page_and_its_query() -> None:
    links = lang.Speech("fr", Labels()).switches(
        "/flows", [("from", "2026-01-01"), ("lang", "fr"), ("kind", "interpol.red")]
    )
    assert [x["lang"] for x in links] == list(LANGUAGES)
    assert [x["current"] for x in links] == [False, True, False, False]
    assert links[3]["href"] == "/flows?from=2026-01-01&kind=interpol.red&lang=ar"
    assert links[3]["name"] == "العربية"
    odd = lang.Speech("en", Labels()).switches("/notices", [("kind", 'a"&<b>')])
    assert odd[1]["href"] == "/notices?kind=a%22%26%3Cb%3E&lang=fr"
    path = lang.Speech("en", Labels()).switches('/notices/"><b>', [])
    assert path[0]["href"] == "/notices/%22%3E%3Cb%3E?lang=en"


def test_the_consoles_own_words_fall_back_to_english() -> None:
    assert words.word("Requests", "fr") == "Demandes"
    assert words.word("Notices", "ar") == "النشرات"
    assert words.word("Requests", "en") == "Requests"
    assert words.word("Proof of delivery", "es") == "Proof of delivery"  # not translated
    assert words.word("Requests", "de") == "Requests"
    for text in words.translated():
        assert all(words.word(text, code).strip() for code in LANGUAGES), text


def test_the_default_language_is_checked_at_start(tmp_path: Path) -> None:
    assert ConsoleConfig(tmp_path, auditor="dpo", lang="ar").lang == "ar"
    with pytest.raises(InvalidArgument, match="--lang 'de': use one of en, fr, es, ar"):
        ConsoleConfig(tmp_path, auditor="dpo", lang="de")
    args = build_parser().parse_args(["console", "--auditor", "dpo", "--lang", "fr"])
    assert args.lang == "fr"
    assert build_parser().parse_args(["console", "--auditor", "dpo"]).lang == "en"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["console", "--auditor", "dpo", "--lang", "de"])


@dataclass
class Mirror:
    leaves: list[audit_pb2.LogLeaf]

    def indexed(self) -> list[tuple[int, audit_pb2.LogLeaf]]:
        return list(enumerate(self.leaves))


@dataclass
class FakeSources:
    """What active_labels reads: the verified log (auditor) and the bundles by version."""

    files: dict[str, dict[str, bytes]]
    versions: list[str]
    config: Any = field(default_factory=lambda: ConsoleConfig(Path("."), auditor="dpo"))
    labels: dict[str, Labels] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    async def log(self) -> Mirror:
        return Mirror(
            [
                audit_pb2.LogLeaf(
                    format=1, policy_activated=audit_pb2.PolicyActivated(version=v, sequence=i)
                )
                for i, v in enumerate(self.versions)
            ]
        )

    async def bundle(self, version: str) -> dict[str, bytes] | None:
        self.fetched.append(version)
        return self.files.get(version)


async def test_labels_come_from_the_policy_in_force_compiled_here() -> None:
    files = read_bundle_dir(REPO_POLICIES)
    version = compile_bundle(files).version
    sources: Any = FakeSources({version: files}, ["0" * 64, version])
    labels, note = await lang.active_labels(sources)
    assert note == ""
    assert labels.label("kinds", "interpol.red", "fr") == "Notice rouge d'INTERPOL"
    assert labels.label("states", "refused", "es") == "Denegada"
    await lang.active_labels(sources)
    assert sources.fetched == [version]  # compiled once per version
    # Nothing active, a bundle the broker lacks, or one that is not what the log names:
    # no labels (identifiers are shown) and the page says why.
    assert (await lang.active_labels(FakeSources({}, [])))[1].startswith("no policy is active")
    labels, note = await lang.active_labels(FakeSources({}, [version]))
    assert labels == Labels() and "does not serve bundle" in note
    forged: Any = FakeSources({"f" * 64: files}, ["f" * 64])
    labels, note = await lang.active_labels(forged)
    assert labels == Labels() and "does not hash to its version" in note
