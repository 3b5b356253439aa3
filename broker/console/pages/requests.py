"""Judicial requests in the log: state, the time limit running, overdue ones first
(broker/console/requestlog.py derives them from the RequestStepLogged leaves)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from broker.console import requestlog
from broker.console.pages import AUDITOR, Page, get
from broker.console.web import console_of, render


async def requests_page(request: Request) -> Response:
    sources = console_of(request).sources
    mirror = await sources.log()
    now = time.time_ns() // 1_000_000
    lines = requestlog.requests(mirror.indexed())
    only_overdue = request.query_params.get("overdue", "") == "1"
    overdue = [r for r in lines if r.overdue(now)]
    shown = overdue if only_overdue else sorted(lines, key=lambda r: not r.overdue(now))
    return render(
        request,
        "requests.html",
        title="Requests",
        lines=shown,
        overdue={r.notice_id for r in overdue},
        total=len(lines),
        only_overdue=only_overdue,
        now=now,
    )


PAGE = Page(
    "requests",
    "/requests",
    "Requests",
    AUDITOR,
    (get("/requests", requests_page),),
    summary="judicial requests: state, deadlines, overdue on either side",
)
