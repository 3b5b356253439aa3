"""The overview: who the console acts as, their certificates, and the pages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from broker.console.pages import ANY, Page, get
from broker.console.web import console_of, render
from broker.core.identity import Party


async def home(request: Request) -> Response:
    sources = console_of(request).sources
    config = sources.config
    parties = []
    if config.auditor is not None:
        parties.append(Party("auditor", config.auditor))
    if config.admin is not None:
        parties.append(Party("admin", config.admin))
    identities = [(p.uri(), sources.local_certificate_expiry(p)) for p in parties]
    return render(request, "home.html", title="Overview", identities=identities)


PAGE = Page("home", "/", "Overview", ANY, (get("/", home),), summary="who the console acts as")
