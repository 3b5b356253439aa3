"""The demo's judicial cooperation (issue 15, item 7): a mutual legal assistance request
from the French bureau to the German office, received and recognised, partly executed
with a sealed 50 MB evidence file (its chain of custody verified by the auditor against
the log), then executed. Every step is signed by the party entitled to it; each node
recomputes the request's state and deadline from those signed steps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from broker import demo_evidence
from broker.client.node import AgencyNode
from broker.client.types import ReceivedNotice
from broker.demo_lookup import Say
from broker.v1 import notice_pb2

ISSUER, EXECUTOR = "FR-NCB", "DE-BKA"
PURPOSE = "investigation"


async def mla_request(
    nodes: Mapping[str, AgencyNode],
    opened: Callable[[str, int, str], Awaitable[ReceivedNotice]],
    target: str,
    keys_dir: Path,
    work_dir: Path,
    say: Say,
    *,
    evidence_size: int = demo_evidence.DEMO_SIZE,
) -> dict[str, object]:
    fr, de = nodes[ISSUER], nodes[EXECUTOR]
    request = await fr.issue_request(
        "request.mla",
        EXECUTOR,
        {
            "request": "measure: bank records; account holder DOE, John (born 1980-01-01)",
            "measures": "bank_records",
            "legal_basis": "EU MLA Convention 2000, Art. 1; CPP art. 694",
        },
        purpose=PURPOSE,
    )
    rid = request.notice_id
    say("")
    say(f"judicial: {ISSUER} issued mutual legal assistance request {rid} to {EXECUTOR}")
    await opened(rid, 1, EXECUTOR)
    await de.request_step("receive", rid)
    await de.request_step("recognise", rid)
    view = next(r for r in await de.requests(role="executor") if r.notice_id == rid)
    say(f"  {EXECUTOR} received and recognised it: {view.state}, {view.deadline} due by")
    say(f"  {_iso(view.deadline_ms)} (computed from the signed steps)")
    evidence = await demo_evidence.evidence_transfer(
        nodes,
        opened,
        target,
        keys_dir,
        work_dir,
        say,
        publish={
            "kind": "reply.request_result",
            "purpose": PURPOSE,
            "sections": {"case_facts": "partial results: account statements 2024-2026"},
            "in_reply_to": rid,
            "restrictions": notice_pb2.OriginatorRestrictions(allow_agencies=[ISSUER]),
        },
        section="results",
        by=EXECUTOR,
        to=ISSUER,
        size=evidence_size,
    )
    await de.request_step("partial", rid, result_notice_id=str(evidence["notice_id"]))
    final = await de.send_result(
        rid, ISSUER, {"results": "all records sent; request executed"}, purpose=PURPOSE, final=True
    )
    await opened(final.notice_id, 1, ISSUER)
    view = next(r for r in await fr.requests(role="issuer") if r.notice_id == rid)
    steps = ", ".join(f"{s.step} by {s.actor}" for s in view.steps)
    say(f"  {ISSUER} sees it {view.state}: {steps}")
    if view.state != "executed" or not evidence["custody_verified"]:
        raise AssertionError(f"the request ended {view.state}, custody {evidence}")
    return {"request_id": rid, "state": view.state, "evidence": evidence}


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
