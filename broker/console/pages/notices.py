"""Notices in the log, and one notice's journey: its decision explained and replayed,
its deliveries and receipts (the proof of delivery verified here), its lifecycle."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from broker.client import audit as ac
from broker.console import derive
from broker.console.journey import check_decision
from broker.console.pages import AUDITOR, Page, get
from broker.console.web import console_of, int_param, render
from broker.core import pod as pd
from broker.core.auditing import CheckpointError
from broker.errors import NotFound


async def notice_list(request: Request) -> Response:
    sources = console_of(request).sources
    mirror = await sources.log()
    kind = request.query_params.get("kind", "")
    originator = request.query_params.get("originator", "")
    views = list(derive.notices(mirror.indexed()).values())
    kinds = sorted({v.kind for v in views})
    originators = sorted({v.originator for v in views})
    shown = [
        v
        for v in reversed(views)
        if (not kind or v.kind == kind) and (not originator or v.originator == originator)
    ]
    return render(
        request,
        "notices.html",
        title="Notices",
        views=shown,
        kinds=kinds,
        originators=originators,
        kind=kind,
        originator=originator,
    )


async def journey(request: Request) -> Response:
    sources = console_of(request).sources
    notice_id = request.path_params["notice_id"]
    version = int_param(request, "version")
    mirror = await sources.log()
    views = derive.notices(mirror.indexed())
    versions = sorted(v for (n, v) in views if n == notice_id)
    if not versions:
        raise NotFound(f"no notice {notice_id} is in the log (checkpoint {mirror.size})")
    version = version or versions[-1]
    view = views.get((notice_id, version))
    if view is None:
        raise NotFound(f"notice {notice_id} has no version {version} in the log")
    pod_bytes = await sources.audit().pod(notice_id, version)
    trust = sources.trust
    report, pod_problem = None, ""
    try:
        report = trust.verify_pod(pod_bytes)
    except (pd.PodError, CheckpointError, ac.AuditFailure) as exc:
        pod_problem = str(exc)
    record = (await sources.decision_records([view.key])).get(view.key)
    bundle = await sources.bundle(view.policy_version) if view.policy_version else None
    checked = check_decision(view, mirror.indexed(), record, bundle)
    receipts = {r.recipient: r for r in report.receipts} if report else {}
    return render(
        request,
        "journey.html",
        title=f"Notice {notice_id}",
        view=view,
        versions=versions,
        report=report,
        pod_problem=pod_problem,
        checked=checked,
        receipts=receipts,
        record_ok=record is not None,
    )


async def pod_file(request: Request) -> Response:
    """The notice's proof-of-delivery bundle as the broker serves it (verify it anywhere
    with `broker audit verify` or the console's proof-of-delivery page)."""
    sources = console_of(request).sources
    notice_id = request.path_params["notice_id"]
    pod = await sources.audit().pod(notice_id, int_param(request, "version"))
    name = f"pod-{notice_id}-v{pod.version}.bin"
    return Response(
        pod.SerializeToString(deterministic=True),
        media_type="application/octet-stream",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


PAGE = Page(
    "notices",
    "/notices",
    "Notices",
    AUDITOR,
    (
        get("/notices", notice_list),
        get("/notices/{notice_id}", journey),
        get("/notices/{notice_id}/pod.bin", pod_file),
    ),
    summary="every notice in the log; a notice's journey with its proofs verified here",
)
