"""Log health: checkpoints over time, witness cosignatures, what the monitor found,
and (on request) a replay of every logged decision."""

from __future__ import annotations

from collections import Counter

from starlette.requests import Request
from starlette.responses import Response

from broker.client import audit as ac
from broker.console import charts, derive
from broker.console.pages import AUDITOR, Page, get
from broker.console.sources import now_ms
from broker.console.web import console_of, int_param, render
from broker.core import auditing, logleaf
from broker.v1 import audit_pb2

HOUR_MS = 3_600_000


async def log_health(request: Request) -> Response:
    sources = console_of(request).sources
    hours = int_param(request, "hours", 24)
    client = sources.audit()
    trust = sources.trust
    monitor = await ac.monitor(client, trust, sources.state_path)
    problem = ""
    try:
        mirror = await sources.log()
    except ac.AuditFailure as exc:
        mirror, problem = None, str(exc)
    since = now_ms() - hours * HOUR_MS
    listed = await sources.audit_call(
        "ListCheckpoints", audit_pb2.ListCheckpointsRequest(since_ms=since)
    )
    rows = []
    for cp in listed.checkpoints:
        try:
            verified = trust.open(cp.note, min_cosignatures=0)
        except auditing.CheckpointError as exc:
            rows.append(
                {
                    "size": cp.size,
                    "at": cp.issued_at_ms,
                    "ok": False,
                    "why": str(exc),
                    "trusted": (),
                    "others": (),
                    "root": bytes(cp.root).hex(),
                }
            )
            continue
        names = derive.signers(cp.note, trust.log.name)
        rows.append(
            {
                "size": cp.size,
                "at": cp.issued_at_ms,
                "ok": True,
                "why": "",
                "trusted": verified.cosigners,
                "others": tuple(n for n in names if n not in verified.cosigners),
                "root": verified.checkpoint.root.hex(),
            }
        )
    chart = charts.timeline([(r["at"], r["size"], len(r["trusted"])) for r in rows if r["ok"]])
    kinds = Counter(logleaf.kind_of(leaf) for leaf in mirror.leaves) if mirror else Counter()
    replay = None
    if request.query_params.get("replay"):
        replay = await ac.replay(client, trust)
    return render(
        request,
        "log.html",
        title="Log health",
        monitor=monitor,
        mirror=mirror,
        problem=problem,
        rows=rows,
        total=listed.total,
        chart=chart,
        hours=hours,
        kinds=sorted(kinds.items()),
        witnesses=[w.name for w in trust.witnesses],
        replay=replay,
        state_path=sources.state_path,
    )


PAGE = Page(
    "log",
    "/log",
    "Log health",
    AUDITOR,
    (get("/log", log_health),),
    summary="checkpoints over time, witness cosignatures, monitor findings, replay",
)
