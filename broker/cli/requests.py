"""`broker node requests` and `broker node request ...`: judicial cooperation requests
from the command line. Listings carry ISO 8601 times, each request's state, running
time limit and whether it is overdue, as this node recomputed them from the signed
steps; `--lang` (en, fr, es, ar) shows the catalogue's labels."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from broker.cli.nodeargs import _sections
from broker.core.policy.labels import LANGUAGES, Labels
from broker.core.requests import STEP_KINDS
from broker.errors import InvalidArgument

STEPS = tuple(s for s in STEP_KINDS if s != "issue")


def iso(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC (empty for 0)."""
    if not ms:
        return ""
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def parse_iso(text: str) -> int:
    """ISO 8601 (a date or a date and time; UTC unless it says) to milliseconds."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidArgument(f"--as-of {text[:40]!r}: write e.g. 2026-12-31T12:00:00Z") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def register_node_requests(
    nsub: Any, common: Callable[[argparse.ArgumentParser], None], node: Callable[..., Any]
) -> None:
    """Add `requests` and `request` to `broker node`."""
    ls = nsub.add_parser(
        "requests", help="judicial requests you issued or must execute, with their deadlines"
    )
    common(ls)
    ls.add_argument("--role", choices=("issuer", "executor"), default="", help="only one side")
    ls.add_argument("--open", action="store_true", help="leave out closed requests")
    ls.add_argument("--as-of", default="", help="judge overdue at this ISO 8601 time")
    ls.add_argument("--lang", choices=LANGUAGES, default="en", help="label language")
    ls.set_defaults(func=run_requests, make_node=node)

    rq = nsub.add_parser("request", help="issue a judicial request, or take a step on one")
    rsub = rq.add_subparsers(dest="step", required=True)
    iss = rsub.add_parser("issue", help="issuer: seal a request for one executing authority")
    common(iss)
    iss.add_argument("--kind", required=True, help="e.g. request.eio, request.mla, request.eaw")
    iss.add_argument("--to", required=True, help="the executing authority, e.g. DE-BKA")
    iss.add_argument("--purpose", default="investigation")
    iss.add_argument("--urgent", action="store_true", help="signed priority: urgent")
    iss.add_argument("--section", action="append", default=[], metavar="NAME=TEXT|NAME=@FILE")
    iss.set_defaults(func=run_issue, make_node=node)
    for step in STEPS:
        p = rsub.add_parser(step, help=f"sign the {step} step of a request")
        common(p)
        p.add_argument("notice_id", help="the request (its notice id)")
        p.add_argument("--reason", default="", help="short text (the log keeps its digest)")
        if step == "refuse":
            p.add_argument(
                "--ground", action="append", default=[], required=True, help="refusal-ground code"
            )
        if step in ("partial", "execute"):
            p.add_argument("--result", default="", help="the notice carrying the results")
        p.set_defaults(func=run_step, make_node=node)


def _rpc_error(exc: grpc.aio.AioRpcError) -> int:
    print(f"broker: {exc.code().name}: {exc.details()}", file=sys.stderr)
    return 1


def render(views: list[Any], labels: Labels, lang: str) -> list[str]:
    """One line per request (the human listing)."""
    out = []
    for v in views:
        label = labels.label
        due = ""
        if v.deadline:
            due = f"  {label('deadlines', v.deadline, lang)} {iso(v.deadline_ms)}"
            if v.overdue:
                due += f"  {label('deadlines', 'overdue', lang).upper()}"
        grounds = ""
        if v.grounds:
            grounds = "  [" + "; ".join(label("grounds", g, lang) for g in v.grounds) + "]"
        problem = f"  !! {v.problem}" if v.problem else ""
        out.append(
            f"{v.notice_id}  {label('kinds', v.kind, lang)}  {v.issuer} -> {v.executor}  "
            f"{label('priorities', v.priority, lang)}  {label('states', v.state, lang)}  "
            f"{iso(v.issued_at_ms)}{due}{grounds}{problem}"
        )
    return out


def run_requests(args: argparse.Namespace) -> int:
    as_of = parse_iso(args.as_of) if args.as_of else 0

    async def go() -> int:
        async with args.make_node(args) as node:
            try:
                views = await node.requests(role=args.role, open_only=args.open, as_of_ms=as_of)
                labels = (await node.directory()).policy.catalogue.labels
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "notice_id": v.notice_id,
                            "kind": v.kind,
                            "kind_label": labels.label("kinds", v.kind, args.lang),
                            "issuer": v.issuer,
                            "executor": v.executor,
                            "priority": v.priority,
                            "state": v.state,
                            "state_label": labels.label("states", v.state, args.lang),
                            "issued_at": iso(v.issued_at_ms),
                            "deadline": v.deadline,
                            "deadline_at": iso(v.deadline_ms),
                            "overdue": v.overdue,
                            "grounds": list(v.grounds),
                            "steps": [
                                {"step": s.step, "actor": s.actor, "at": iso(s.at_ms)}
                                for s in v.steps
                            ],
                            "problem": v.problem,
                        }
                        for v in views
                    ],
                    ensure_ascii=False,
                )
            )
            return 0
        if not views:
            print("no requests")
        for line in render(views, labels, args.lang):
            print(line)
        return 0

    return asyncio.run(go())


def run_issue(args: argparse.Namespace) -> int:
    sections = _sections(args.section)  # broker/cli/nodeargs.py

    async def go() -> int:
        async with args.make_node(args) as node:
            try:
                published = await node.issue_request(
                    args.kind,
                    args.to,
                    sections,
                    purpose=args.purpose,
                    priority="urgent" if args.urgent else "normal",
                )
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
        if args.json:
            print(json.dumps({"notice_id": published.notice_id, "executor": args.to}))
        else:
            print(f"issued {args.kind} {published.notice_id} to {args.to}")
        return 0

    return asyncio.run(go())


def run_step(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with args.make_node(args) as node:
            try:
                response = await node.request_step(
                    args.step,
                    args.notice_id,
                    grounds=getattr(args, "ground", []),
                    reason=args.reason,
                    result_notice_id=getattr(args, "result", ""),
                )
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
        told = ", ".join(response.told)
        if args.json:
            print(json.dumps({"action_id": response.action_id, "told": list(response.told)}))
        else:
            print(f"{args.step} {args.notice_id}: told {told or 'nobody'}")
        return 0

    return asyncio.run(go())
