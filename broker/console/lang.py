"""The console in INTERPOL's working languages: English, French, Spanish and Arabic.

The terms of the catalogue a page shows (notice and request kinds, sections, fields,
measures, refusal grounds, request states, steps, priorities, deadlines) are shown with the
labels of the policy in force, the same signed labels `broker node requests --lang`
prints (``[labels]`` in catalogue.toml, :mod:`broker.core.policy.labels`). Each keeps
its catalogue identifier visible beside it (and in its ``title`` and ``data-id``), so an
auditor can match what they read with the log. A missing label falls back to English,
then to the identifier. The console's own words come from :mod:`broker.console.words`.

The language is chosen per request: ``?lang=`` on any page (remembered in a cookie for
the next pages), else that cookie, else ``broker console --lang`` (English by default).
An unknown ``?lang=`` is refused with a 400 page; it is never echoed back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlencode

from markupsafe import Markup

from broker.console import derive, words
from broker.console.sources import Sources
from broker.core.policy import compile_bundle
from broker.core.policy.labels import LANGUAGES, Labels
from broker.errors import BrokerError, InvalidArgument
from broker.v1 import admin_pb2

PARAM: Final = "lang"
RTL: Final = frozenset({"ar"})
AUTONYMS: Final = {"en": "English", "fr": "Français", "es": "Español", "ar": "العربية"}


class UnknownLanguage(InvalidArgument):
    """?lang= names a language the console does not have."""

    def __init__(self) -> None:
        super().__init__("the console has no such language: choose one of " + ", ".join(LANGUAGES))


def cookie_name(port: int) -> str:
    """Cookies are per host, not per port: one console's choice does not leak to another."""
    return f"broker_console_{port}_lang"


def choose(query: str | None, cookie: str | None, default: str) -> tuple[str, bool]:
    """(language, whether to remember it in the cookie). ``?lang=`` wins and must be one
    of LANGUAGES (UnknownLanguage otherwise); a cookie that names none is ignored."""
    if query is not None:
        if query not in LANGUAGES:
            raise UnknownLanguage()
        return query, query != cookie
    if cookie in LANGUAGES:
        return str(cookie), False
    return default, False


def _same(label: str, name: str) -> bool:
    """Whether the label says no more than the identifier ("Received" for received)."""
    return label.casefold().replace(" ", "_") == name.casefold()


@dataclass(frozen=True)
class Speech:
    """How one page speaks: its language, the catalogue's labels, the console's words."""

    lang: str
    labels: Labels
    remember: bool = False  # set the language cookie on this response
    note: str = ""  # why the labels are missing, if they are

    @property
    def dir(self) -> str:
        return "rtl" if self.lang in RTL else "ltr"

    def label(self, category: str, name: str) -> str:
        """The label of a catalogue term; English when missing, else the identifier."""
        return self.labels.label(category, name, self.lang)

    def word(self, text: str) -> str:
        return words.word(text, self.lang)

    def option(self, category: str, name: str) -> str:
        """Plain text for a <select> option: the label and, if it differs, the identifier."""
        text = self.label(category, name)
        return name if text == name else f"{text} ({name})"

    def term(self, category: str, name: str) -> Markup:
        """A catalogue term: its label, with the identifier in small text (unless the label
        is the identifier), in its title and in data-id; bidi-isolated for Arabic pages."""
        text = self.label(category, name)
        if text == name:
            return Markup('<span class="term" data-id="{0}"><bdi>{0}</bdi></span>').format(name)
        if _same(text, name):
            return Markup(
                '<span class="term" data-id="{0}" title="{0}"><bdi>{1}</bdi></span>'
            ).format(name, text)
        return Markup(
            '<span class="term" data-id="{0}" title="{0}"><bdi>{1}</bdi> '
            '<small class="id"><bdi>{0}</bdi></small></span>'
        ).format(name, text)

    def terms(self, category: str, names: Iterable[str]) -> Markup:
        sep = Markup("، ") if self.lang == "ar" else Markup(", ")
        return sep.join(self.term(category, n) for n in names)

    def switches(self, path: str, query: Sequence[tuple[str, str]]) -> list[dict[str, object]]:
        """The language selector: this page (and its query) in each language."""
        kept = [(k, v) for k, v in query if k != PARAM]
        return [
            {
                "lang": code,
                "name": AUTONYMS[code],
                "href": f"{quote(path)}?{urlencode([*kept, (PARAM, code)])}",
                "current": code == self.lang,
            }
            for code in LANGUAGES
        ]


async def active_labels(sources: Sources) -> tuple[Labels, str]:
    """The labels of the policy in force (compiled here from its bundle, cached by version),
    and why they are missing when they are (the page then shows identifiers)."""
    try:
        version = await _active_version(sources)
        if not version:
            return Labels(), "no policy is active: catalogue identifiers are shown"
        if version not in sources.labels:
            files = await sources.bundle(version)
            if files is None:
                return Labels(), f"the broker does not serve bundle {version[:12]}"
            bundle = compile_bundle(files)
            if bundle.version != version:
                return Labels(), f"bundle {version[:12]} does not hash to its version"
            sources.labels[version] = bundle.catalogue.labels
        return sources.labels[version], ""
    except BrokerError as exc:  # PolicyError and AuditFailure included
        return Labels(), f"catalogue labels unavailable: {exc}"


async def _active_version(sources: Sources) -> str:
    """The active policy version: from the verified log (auditor), else the broker (admin)."""
    if sources.config.auditor is not None:
        history = derive.activations((await sources.log()).indexed())
        return history[0].version if history else ""
    resp = await sources.admin_call("PolicyHistory", admin_pb2.PolicyHistoryRequest())
    active = [e for e in resp.entries if e.active] or sorted(
        resp.entries, key=lambda e: e.sequence, reverse=True
    )
    return str(active[0].version) if active else ""
