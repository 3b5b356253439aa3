"""The confirmation step of every signed administrator action: it shows exactly what
will be signed; only its POST signs (with the administrator's own key) and sends."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.console import confirm
from broker.console.pages import ADMIN, Page, get, post
from broker.console.security import checked_form
from broker.console.sources import now_ms
from broker.console.web import console_of, render


async def show(request: Request) -> Response:
    console = console_of(request)
    pending = console.pending.get(request.path_params["key"], now_ms())
    return render(request, "confirm.html", title=pending.title, pending=pending)


async def execute(request: Request) -> Response:
    await checked_form(request)
    console = console_of(request)
    pending = console.pending.take(request.path_params["key"], now_ms())
    done = await confirm.execute(pending, console.sources)
    return render(request, "done.html", title="Done", done=done, pending=pending)


async def cancel(request: Request) -> Response:
    await checked_form(request)
    console = console_of(request)
    key = request.path_params["key"]
    back = console.pending.get(key, now_ms()).back
    console.pending.cancel(key)
    return RedirectResponse(back, status_code=303)


PAGE = Page(
    "confirm",
    "/confirm",
    "Confirm",
    ADMIN,
    (
        get("/confirm/{key}", show),
        post("/confirm/{key}", execute),
        post("/confirm/{key}/cancel", cancel),
    ),
    nav=False,
)
