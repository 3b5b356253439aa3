"""The registry: agencies, their status, key serials and certificate expiry, each
signed entry and key statement verified here; suspending and reactivating an agency
(signed by the administrator's own key, after confirmation)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from broker.console import confirm, derive
from broker.console.pages import ANY, Page, get, post
from broker.console.security import checked_form
from broker.console.sources import NeedsIdentity, StatementCheck, now_ms
from broker.console.web import console_of, render
from broker.core import activation as act
from broker.core.identity import Party
from broker.errors import InvalidArgument, NotFound
from broker.v1 import admin_pb2

STATUSES = {"suspend": "suspended", "reactivate": "active"}
SOON_MS = 30 * 86_400_000


@dataclass(frozen=True)
class Row:
    entry: admin_pb2.AgencyEntry
    signed_by: str  # "" when only bootstrapped
    signature_problem: str
    statement: StatementCheck | None
    tls_expiry_ms: int | None


async def registry_page(request: Request) -> Response:
    sources = console_of(request).sources
    now = now_ms()
    if sources.config.admin is None:
        mirror = await sources.log()
        return render(
            request,
            "registry_log.html",
            title="Registry",
            changes=derive.registry(mirror.indexed()),
            size=mirror.size,
        )
    listed = await sources.admin_call("ListAgencies", admin_pb2.ListAgenciesRequest())
    statements = await sources.admin_call("ListKeyStatements", admin_pb2.ListKeyStatementsRequest())
    by_agency = {s.agency_id: s.statement for s in statements.statements}
    rows = []
    for entry, signed in zip(listed.agencies, listed.signed, strict=True):
        by, problem = "", ""
        if signed.entry:
            try:
                verified = act.verify_agency_entry(signed, sources.ca_cert, now)
                by = verified.admin.id
                if verified.entry != entry:
                    problem = "the signed entry differs from the one listed"
            except act.ActivationError as exc:
                problem = str(exc)
        statement = by_agency.get(entry.id)
        check = sources.check_statement(entry.id, statement) if statement else None
        tls = sources.local_certificate_expiry(Party("agency", entry.id))
        rows.append(Row(entry, by, problem, check, tls))
    actions = await sources.admin_call(
        "ListAdminActions", admin_pb2.ListAdminActionsRequest(limit=20)
    )
    return render(
        request,
        "registry.html",
        title="Registry",
        rows=rows,
        actions=actions.actions,
        now=now,
        soon=now + SOON_MS,
    )


async def change_status(request: Request) -> Response:
    form = await checked_form(request)
    console = console_of(request)
    sources = console.sources
    if sources.config.admin is None:
        raise NeedsIdentity("admin")
    agency = str(form.get("agency", ""))
    status = STATUSES.get(str(form.get("action", "")))
    if status is None:
        raise InvalidArgument("action must be suspend or reactivate")
    listed = await sources.admin_call("ListAgencies", admin_pb2.ListAgenciesRequest())
    current = next((e for e in listed.agencies if e.id == agency), None)
    if current is None:
        raise NotFound(f"agency {agency!r} is not in the registry")
    at = now_ms()
    pending = confirm.status_change(
        console.pending.new_id(),
        current=current,
        status=status,
        reason=str(form.get("reason", "")),
        at_ms=at,
        back="/registry",
    )
    console.pending.add(pending, at)
    return RedirectResponse(f"/confirm/{pending.id}", status_code=303)


PAGE = Page(
    "registry",
    "/registry",
    "Registry",
    ANY,
    (get("/registry", registry_page), post("/registry/status", change_status)),
    summary="agencies, status, key serials, certificate expiry; suspend and reactivate",
)
