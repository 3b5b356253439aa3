"""Queues: deliveries waiting for a receipt, dead letters, lifecycle actions not yet
acknowledged, and replies past their deadline (AuditService.GetQueues)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from broker.console.pages import AUDITOR, Page, get
from broker.console.web import console_of, render
from broker.v1 import audit_pb2


async def queues_page(request: Request) -> Response:
    sources = console_of(request).sources
    queues = await sources.audit_call("GetQueues", audit_pb2.GetQueuesRequest())
    return render(request, "queues.html", title="Queues", q=queues)


PAGE = Page(
    "queues",
    "/queues",
    "Queues",
    AUDITOR,
    (get("/queues", queues_page),),
    summary="pending deliveries, dead letters, unacknowledged actions, overdue replies",
)
