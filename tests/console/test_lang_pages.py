"""The console in French, Spanish and Arabic, in a real browser, against the demo's
deployment (see conftest.py): the catalogue's labels of the policy in force, the catalogue
identifiers kept visible, right-to-left Arabic pages, the selector that keeps the page,
`broker console --lang`, and an unknown language refused without being echoed."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from broker.bundles import read_bundle_dir
from broker.core.policy import compile_bundle
from broker.core.policy.labels import Labels
from broker.sandbox import REPO_POLICIES

from .conftest import Scene, shot
from .test_pages import text

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def labels() -> Labels:
    """The shipped catalogue's labels: the demo activates this bundle."""
    return compile_bundle(read_bundle_dir(REPO_POLICIES)).catalogue.labels


def html_attr(page: Any, name: str) -> str:
    return str(page.get_attribute("html", name))


def test_a_red_notice_in_french_keeps_its_identifier(scene: Scene, page: Any) -> None:
    response = page.goto(scene.base + "/notices?lang=fr")
    assert response.status == 200 and response.headers["content-language"] == "fr"
    assert (html_attr(page, "lang"), html_attr(page, "dir")) == ("fr", "ltr")
    assert text(page, "h1") == "Notices"
    assert "Demandes" in text(page, "nav") and "Files d'attente" in text(page, "nav")
    row = page.locator(f"#notice-table tr:has(a[href^='/notices/{scene.red_id}'])").first
    kind = row.locator("td .term[data-id='interpol.red']")
    assert kind.locator("bdi").first.inner_text() == "Notice rouge d'INTERPOL"
    assert kind.locator("small.id").inner_text() == "interpol.red"  # what the log says
    assert kind.get_attribute("title") == "interpol.red"
    option = page.locator("select[name=kind] option[value='interpol.red']")
    assert option.inner_text() == "Notice rouge d'INTERPOL (interpol.red)"
    # The journey, reached by a plain link, is still in French (the choice is remembered).
    row.locator("a").first.click()
    assert html_attr(page, "lang") == "fr"
    assert "Notice rouge d'INTERPOL" in text(page, "dl.fields")
    deliveries = text(page, "#delivery-table tr[data-recipient='DE-BKA']")
    assert "Identité" in deliveries and "identity" in deliveries
    assert "Exposé des faits" in deliveries and "case_facts" in deliveries
    shot(page, "console-fr")


def test_flows_in_french_label_kinds_and_sections(scene: Scene, page: Any) -> None:
    page.goto(scene.base + "/flows?lang=fr")
    assert text(page, "h1") == "Flux"
    cell = page.locator(
        "#flow-table tr[data-kind='interpol.red'][data-recipient='IT-BORDER']"
        "[data-outcome='withheld']"
    )
    row = cell.inner_text()
    assert "Notice rouge d'INTERPOL" in row and "interpol.red" in row
    assert "Décision judiciaire et autorité d'émission" in row and "judicial" in row
    # The picture keeps identifiers (they fit); its node tooltip names the label.
    node = page.locator("svg.flows rect[data-node='interpol.red'] title")
    assert "Notice rouge d'INTERPOL (interpol.red)" in str(node.text_content())


def test_arabic_pages_are_right_to_left_with_the_catalogues_arabic(
    scene: Scene, page: Any, labels: Labels
) -> None:
    page.goto(scene.base + "/requests?lang=ar")
    assert (html_attr(page, "lang"), html_attr(page, "dir")) == ("ar", "rtl")
    assert page.eval_on_selector("main", "m => getComputedStyle(m).direction") == "rtl"
    assert text(page, "h1") == "الطلبات"
    row = page.locator("#request-table tr[data-request]").first
    state = str(row.get_attribute("data-state"))
    cells = row.inner_text()
    assert labels.label("kinds", "request.mla", "ar") in cells and "request.mla" in cells
    assert labels.label("states", state, "ar") in cells and state in cells
    assert labels.label("priorities", "normal", "ar") in cells
    shot(page, "console-ar")
    page.goto(scene.base + "/queues")  # no ?lang=: still Arabic
    assert html_attr(page, "dir") == "rtl"
    waiting = text(page, "#waiting-table")
    assert labels.label("kinds", "interpol.red", "ar") in waiting and "interpol.red" in waiting
    shot(page, "console-ar-queues")


def test_switching_language_keeps_the_page_and_its_query(scene: Scene, page: Any) -> None:
    page.goto(scene.base + "/flows?from=2026-01-01&kind=interpol.red&lang=fr")
    page.click("#lang-selector a[hreflang='es']")
    assert page.url.startswith(scene.base + "/flows?")
    assert "from=2026-01-01" in page.url and "kind=interpol.red" in page.url
    assert page.url.endswith("lang=es")
    assert (html_attr(page, "lang"), text(page, "h1")) == ("es", "Flujos")
    assert page.locator("select[name=kind] option[selected]").get_attribute("value") == (
        "interpol.red"
    )
    assert page.locator("#lang-selector strong[aria-current]").inner_text() == "Español"
    page.click("nav a[href='/requests']")
    assert (html_attr(page, "lang"), text(page, "h1")) == ("es", "Solicitudes")
    page.click("#lang-selector a[hreflang='en']")
    assert page.url == scene.base + "/requests?lang=en"
    assert (html_attr(page, "lang"), html_attr(page, "dir")) == ("en", "ltr")
    assert text(page, "h1") == "Requests"


def test_an_unknown_language_is_refused_and_not_echoed(scene: Scene, page: Any) -> None:
    page.goto(scene.base + "/notices?lang=fr")
    for bad in ("de", "<script>alert(1)</script>", "fr%22%3E%3Cb%3Ex"):
        response = page.goto(scene.base + "/notices?lang=" + bad)
        assert response.status == 400
        assert "en, fr, es, ar" in text(page, "#error")
        assert text(page, "h1") == "Langue inconnue"  # in the language chosen before
        body = page.content()
        assert "alert(1)" not in body and "<b>x" not in body and "de" not in text(page, "#error")
        assert page.eval_on_selector_all("script", "els => els.length") == 0
        # The selector leads back to the same page, without the refused value.
        assert page.get_attribute("#lang-selector a[hreflang='es']", "href") == "/notices?lang=es"
    page.goto(scene.base + "/notices")
    assert html_attr(page, "lang") == "fr"  # the refused value changed nothing


@pytest.fixture(scope="module")
def arabic_console(scene: Scene) -> Iterator[str]:
    """A second console on the same deployment, started with `--lang ar`: its login URL."""
    console = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker.cli.main",
            *scene.console_command,
            "--broker",
            scene.target,
            "--listen",
            "127.0.0.1:0",
            "--lang",
            "ar",
        ],
        cwd=scene.root.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert console.stdout is not None
        url = ""
        while not url:
            line = console.stdout.readline()
            assert line, "broker console --lang ar exited"
            m = re.match(r"^open (http://\S+)$", line.strip())
            url = m.group(1) if m else ""
        yield url
    finally:
        console.terminate()
        try:
            console.wait(15)
        except subprocess.TimeoutExpired:
            console.kill()
            console.wait(5)
        if console.stdout is not None:
            console.stdout.close()


def test_broker_console_lang_sets_the_default(
    browser: Any, arabic_console: str, labels: Labels
) -> None:
    context = browser.new_context()
    try:
        p = context.new_page()
        p.set_default_timeout(20_000)
        p.goto(arabic_console)  # the login redirects to the overview
        assert (html_attr(p, "lang"), html_attr(p, "dir")) == ("ar", "rtl")
        assert text(p, "h1") == "نظرة عامة"
        base = arabic_console.partition("/login")[0]
        p.goto(base + "/notices")
        assert labels.label("kinds", "interpol.red", "ar") in text(p, "#notice-table")
        p.click("#lang-selector a[hreflang='en']")  # the person can still switch
        assert (html_attr(p, "lang"), text(p, "h1")) == ("en", "Notices")
    finally:
        context.close()


def test_the_policy_page_lists_each_kinds_fields_in_french(scene: Scene, page: Any) -> None:
    page.goto(scene.base + "/policy?lang=fr")
    page.click("#kinds summary")  # the kinds of the bundle in force, folded by default
    assert "Types" in text(page, "#kinds summary") and "champs du contenu" in text(page, "#kinds")
    row = page.locator("#kinds-table tr[data-kind='interpol.red']")
    assert row.locator(".term[data-id='interpol.red'] bdi").first.inner_text() == (
        "Notice rouge d'INTERPOL"
    )
    identity = row.locator("div[data-section='identity']")
    family = identity.locator(".term[data-id='family_name']")
    assert family.locator("bdi").first.inner_text() == "Nom de famille"
    assert family.locator("small.id").inner_text() == "family_name"  # the identifier kept
    assert "Date de naissance" in identity.inner_text() and "date_of_birth" in identity.inner_text()
    header = row.locator("td .term[data-id='data_subject'] bdi").first.inner_text()
    assert header == "Catégorie de personne concernée"
    # The same table in Arabic, right to left, with the catalogue's Arabic labels.
    page.goto(scene.base + "/policy?lang=ar")
    assert html_attr(page, "dir") == "rtl"
    page.click("#kinds summary")
    art38 = page.locator("#kinds-table tr[data-kind='sis.art38'] div[data-section='action']")
    assert "الإجراء الواجب اتخاذه عند النتيجة الإيجابية" in art38.inner_text()
    assert "action_on_hit" in art38.inner_text()
    shot(page, "console-policy-kinds-ar", full=False)
    page.goto(scene.base + "/policy?lang=en")  # leave the next tests in English
