"""Flows: which agencies received which sections of which kinds of notice over a
period, what was withheld and who was refused, as a picture and a table."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from broker.console import charts, derive
from broker.console.pages import AUDITOR, Page, get
from broker.console.sources import now_ms, record_ok
from broker.console.web import console_of, render
from broker.errors import InvalidArgument

DAY_MS = 86_400_000


def _day(text: str, default: date) -> date:
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"dates look like 2026-11-30, not {text!r}") from None


def _ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


async def flows_page(request: Request) -> Response:
    sources = console_of(request).sources
    today = datetime.fromtimestamp(now_ms() / 1000, tz=UTC).date()
    start = _day(request.query_params.get("from", ""), today - timedelta(days=30))
    end = _day(request.query_params.get("to", ""), today)
    if end < start:
        raise InvalidArgument("the period ends before it starts: swap from and to")
    kind = request.query_params.get("kind", "")
    mirror = await sources.log()
    views = derive.notices(mirror.indexed())
    start_ms, end_ms = _ms(start), _ms(end) + DAY_MS - 1
    in_period = [v for v in views.values() if start_ms <= v.accepted_at_ms <= end_ms and v.decision]
    records = await sources.decision_records([v.key for v in in_period])
    checked = {}
    for key, record in records.items():
        decision = views[key].decision
        if decision is not None and record_ok(record, decision):
            checked[key] = record
    flows = derive.flows(views.values(), checked, start_ms, end_ms, kind)
    chart = charts.flow_chart(flows)
    kinds = sorted({v.kind for v in views.values() if not v.kind.startswith("reply.")})
    return render(
        request,
        "flows.html",
        title="Flows",
        flows=flows,
        chart=chart,
        start=start.isoformat(),
        end=end.isoformat(),
        kind=kind,
        kinds=kinds,
        outcomes=derive.OUTCOMES,
        outcome_text=derive.OUTCOME_TEXT,
        tampered=len(records) - len(checked),
    )


PAGE = Page(
    "flows",
    "/flows",
    "Flows",
    AUDITOR,
    (get("/flows", flows_page),),
    summary="which agencies received which sections, withheld and refused, over a period",
)
