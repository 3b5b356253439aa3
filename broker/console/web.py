"""What every page handler shares: the console's state, rendering, and one error boundary.

A handler is ``async def handler(request) -> Response`` wrapped by :func:`view`,
which turns the project's errors into a page that says what to do: a missing
identity (403), a refused CSRF token (403), the broker's refusal or absence.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from broker.console import charts, lang
from broker.console.security import CsrfRefused, Guard
from broker.console.sources import NeedsIdentity, Sources
from broker.core.policy.labels import Labels
from broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

if TYPE_CHECKING:
    from broker.console.confirm import PendingActions
    from broker.console.pages import Page

Handler = Callable[[Request], Awaitable[Response]]
_STATUS: dict[type[BrokerError], int] = {
    InvalidArgument: 400,
    NotFound: 404,
    PermissionDenied: 403,
    FailedPrecondition: 409,
    Unavailable: 503,
}


@dataclass
class Console:
    sources: Sources
    guard: Guard
    pending: PendingActions
    pages: tuple[Page, ...]


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def speech_of(request: Request) -> lang.Speech:
    """How this page speaks (set by :func:`view`; the default language until then)."""
    speech: lang.Speech | None = getattr(request.state, "speech", None)
    if speech is None:
        return lang.Speech(console_of(request).sources.config.lang, Labels())
    return speech


async def choose_language(request: Request) -> None:
    """Set the page's language and labels on request.state; raise UnknownLanguage for
    an unknown ?lang= (the refusal page then speaks the language chosen before)."""
    console = console_of(request)
    default = console.sources.config.lang
    cookie = request.cookies.get(lang.cookie_name(console.guard.port))
    labels, note = await lang.active_labels(console.sources)
    try:
        chosen, remember = lang.choose(request.query_params.get(lang.PARAM), cookie, default)
    except lang.UnknownLanguage:
        request.state.speech = lang.Speech(
            lang.choose(None, cookie, default)[0], labels, False, note
        )
        raise
    request.state.speech = lang.Speech(chosen, labels, remember, note)


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    console = console_of(request)
    config = console.sources.config
    speech = speech_of(request)
    base = {
        "pages": [p for p in console.pages if p.nav],
        "csrf": console.guard.csrf,
        "config": config,
        "clock": charts.clock,
        "path": request.url.path,
        "has_auditor": config.auditor is not None,
        "has_admin": config.admin is not None,
        "speech": speech,
        "w": speech.word,
        "term": speech.term,
        "terms": speech.terms,
        "option": speech.option,
        "switches": speech.switches(request.url.path, request.query_params.multi_items()),
    }
    response: Response = request.app.state.templates.TemplateResponse(
        request, template, {**base, **context}, status_code=status
    )
    response.headers["content-language"] = speech.lang
    if speech.remember:
        response.set_cookie(
            lang.cookie_name(console.guard.port),
            speech.lang,
            httponly=True,
            samesite="strict",
            path="/",
        )
    return response


def status_of(exc: BrokerError) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


def view(handler: Handler) -> Handler:
    """The error boundary of a page: expected errors become a page saying what to do."""

    async def wrapped(request: Request) -> Response:
        try:
            await choose_language(request)
            return await handler(request)
        except lang.UnknownLanguage as exc:
            title = speech_of(request).word("Unknown language")
            return render(request, "error.html", 400, title=title, message=str(exc))
        except NeedsIdentity as exc:
            return render(request, "error.html", 403, title="Identity needed", message=str(exc))
        except CsrfRefused as exc:
            return render(request, "error.html", 403, title="Refused", message=str(exc))
        except BrokerError as exc:
            return render(
                request, "error.html", status_of(exc), title="Cannot show this", message=str(exc)
            )

    return wrapped


def int_param(request: Request, name: str, default: int = 0) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    if not raw.isdigit():
        raise InvalidArgument(f"{name} must be a whole number, not {raw!r}")
    return int(raw)
