"""`broker node` lifecycle actions (suspend, resume, withdraw, cancel, extend, flag,
lift-flag, request-lift) and replies (report, ask, correct; the replies list)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from broker.cli.nodeargs import (
    DAY_MS,
    HOUR_MS,
    _common,
    _iso,
    _node,
    _now_ms,
    _positive_float,
    _positive_int,
    _rpc_error,
    _section_flag,
    _sections,
    _when,
)
from broker.errors import InvalidArgument
from broker.v1 import agency_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.client.node import AgencyNode, LifecycleNotice


def _register_lifecycle(nsub: Any) -> None:
    def action(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = nsub.add_parser(name, help=help)
        _common(p)
        p.add_argument("notice_id")
        p.set_defaults(func=func)
        return p

    p = action("suspend", "originator: suspend a notice for a while", run_suspend)
    p.add_argument(
        "--until-hours", type=_positive_float, required=True, help="hours from now (max 6 months)"
    )
    p.add_argument("--reason", default="")
    p = action("resume", "originator: end a notice's suspension now", run_resume)
    p.add_argument("--reason", default="")
    p = action("withdraw", "originator: withdraw a notice; every copy is deleted", run_withdraw)
    p.add_argument("--reason", required=True)
    p = action("cancel", "originator: cancel a notice (its purpose was met)", run_cancel)
    p.add_argument("--reason", required=True)
    p = action("extend", "originator: keep a notice longer, with a justification", run_extend)
    p.add_argument(
        "--days", type=_positive_int, required=True, help="new expiry: this many days from now"
    )
    p.add_argument("--justification", required=True)
    p = action("flag", "recipient: the action will not be taken on your territory", run_flag)
    p.add_argument("--reason", required=True)
    p = action("lift-flag", "recipient: lift the flag you set on a notice", run_lift_flag)
    p.add_argument("--reason", default="")
    p = action(
        "request-lift", "originator: ask a flagging recipient to lift its flag", run_request_lift
    )
    p.add_argument(
        "--target",
        required=True,
        metavar="AGENCY",
        help="the flagging agency (--agency is this node's own id)",
    )
    p.add_argument("--reason", default="")


def _register_replies(nsub: Any) -> None:
    def reply(name: str, help: str, kind: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = nsub.add_parser(name, help=help)
        _common(p)
        p.add_argument("notice_id", help="the notice answered")
        _section_flag(p)
        p.add_argument("--tlp", default="AMBER", help="CLEAR, GREEN, AMBER, AMBER+STRICT, RED")
        p.set_defaults(func=run_reply, reply_kind=kind)
        return p

    for name, kind, help in (
        ("report", "reply.hit_report", "recipient: report a hit to the notice's originator"),
        ("ask", "reply.info_request", "recipient: ask the notice's originator for information"),
    ):
        p = reply(name, help, kind)
        p.add_argument(
            "--to", help="the notice's originator (default: from the notice in your inbox)"
        )
        p.add_argument(
            "--purpose", help="the notice's purpose (default: from the notice in your inbox)"
        )
        p.add_argument(
            "--respond-within-hours",
            type=_positive_float,
            help="ask for an answer within this many hours (a deadline)",
        )
    p = reply("correct", "originator: send a correction to a recipient", "reply.correction")
    p.add_argument("--to", required=True, help="the recipient corrected")
    p.add_argument("--purpose", required=True, help="the notice's purpose")
    p.set_defaults(respond_within_hours=None)

    rp = nsub.add_parser("replies", help="hit reports, requests and corrections you sent or got")
    _common(rp)
    rp.add_argument("--open", action="store_true", help="only those still awaiting an answer")
    rp.set_defaults(func=run_replies)


def _copies(n: int) -> str:
    return f"{n} local cop{'y' if n == 1 else 'ies'}"


def _describe_action(notice: LifecycleNotice) -> str:
    """One line for a LifecycleNotice, e.g. 'withdraw N by FR-NCB: arrested; erased ...'."""
    a = notice.action
    text = f"{notice.kind} {a.notice_id}"
    if a.version:
        text += f" v{a.version}"
    text += f" by {a.actor}"
    if a.target:
        text += f" to {a.target}"
    if a.until_ms:
        text += f" until {_when(a.until_ms)}"
    if notice.reason or a.reason:
        text += f": {notice.reason or a.reason}"  # the opened text, else its digest
    if notice.erased:
        text += f"; erased {_copies(notice.erased)}"
    return text


ActCall = Callable[["AgencyNode"], Awaitable[agency_pb2.ActResponse]]


def _act(args: argparse.Namespace, kind: str, call: ActCall, until_ms: int = 0) -> int:
    """Send one lifecycle action and print what the broker did with it."""

    async def go() -> int:
        async with _node(args) as node:
            try:
                result = await call(node)
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
        if args.json:
            row: dict[str, object] = {
                "action": kind,
                "notice_id": args.notice_id,
                "action_id": result.action_id,
                "told": list(result.told),
                "purged": result.purged,
                "duplicate": result.duplicate,
            }
            if until_ms:
                row["until_ms"] = until_ms
                row["until"] = _iso(until_ms)
            print(json.dumps(row))
        else:
            until = f" until {_when(until_ms)}" if until_ms else ""
            told = ", ".join(result.told) or "nobody (no recipient holds a copy)"
            line = f"{kind} {args.notice_id}{until}: told {told}"
            if result.purged:
                n = result.purged
                line += f"; {n} undelivered cop{'y' if n == 1 else 'ies'} purged from the broker"
            if result.duplicate:
                line += " (already recorded: nothing changed)"
            print(line)
        return 0

    return asyncio.run(go())


def run_suspend(args: argparse.Namespace) -> int:
    until = _now_ms() + int(args.until_hours * HOUR_MS)
    return _act(
        args, "suspend", lambda n: n.suspend(args.notice_id, until, args.reason), until_ms=until
    )


def run_resume(args: argparse.Namespace) -> int:
    return _act(args, "resume", lambda n: n.resume(args.notice_id, args.reason))


def run_withdraw(args: argparse.Namespace) -> int:
    return _act(args, "withdraw", lambda n: n.withdraw(args.notice_id, args.reason))


def run_cancel(args: argparse.Namespace) -> int:
    return _act(args, "cancel", lambda n: n.cancel(args.notice_id, args.reason))


def run_extend(args: argparse.Namespace) -> int:
    until = _now_ms() + args.days * DAY_MS
    return _act(
        args,
        "extend",
        lambda n: n.extend(args.notice_id, until, args.justification),
        until_ms=until,
    )


def run_flag(args: argparse.Namespace) -> int:
    return _act(args, "flag", lambda n: n.flag(args.notice_id, args.reason))


def run_lift_flag(args: argparse.Namespace) -> int:
    return _act(args, "lift_flag", lambda n: n.lift_flag(args.notice_id, args.reason))


def run_request_lift(args: argparse.Namespace) -> int:
    return _act(
        args,
        "request_flag_lift",
        lambda n: n.request_flag_lift(args.notice_id, args.target, args.reason),
    )


# -- replies ----------------------------------------------------------------------------
def _held_header(node: AgencyNode, notice_id: str) -> notice_pb2.NoticeHeader | None:
    """The header of the latest version of a notice this node holds (verified), if any."""
    from broker.core.envelope import OpenError

    row = node.inbox.conn.execute(
        "SELECT delivery FROM inbox WHERE notice_id=? AND delivery<>x'' "
        "ORDER BY version DESC LIMIT 1",
        (notice_id,),
    ).fetchone()
    if row is None:
        return None
    try:
        header = node.open(notice_pb2.Delivery.FromString(bytes(row[0]))).header
    except OpenError:
        return None
    return header


def run_reply(args: argparse.Namespace) -> int:
    sections = _sections(args.section, args.field)
    within_ms = int(args.respond_within_hours * HOUR_MS) if args.respond_within_hours else 0

    async def go() -> int:
        async with _node(args) as node:
            purpose, to = args.purpose, args.to
            if purpose is None or to is None:
                header = _held_header(node, args.notice_id)
                if header is None:
                    raise InvalidArgument(
                        f"notice {args.notice_id} is not in {args.agency}'s inbox: "
                        "give --to (its originator) and --purpose"
                    )
                purpose, to = purpose or header.purpose, to or header.originator
            try:
                result = await node.reply(
                    args.reply_kind,
                    args.notice_id,
                    sections,
                    to=to,
                    purpose=purpose,
                    respond_within_ms=within_ms,
                    tlp=args.tlp,
                )
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
        recipients = sorted(result.audience)
        if args.json:
            print(
                json.dumps(
                    {
                        "notice_id": result.notice_id,
                        "version": result.version,
                        "kind": args.reply_kind,
                        "in_reply_to": args.notice_id,
                        "to": recipients,
                        "respond_within_ms": within_ms,
                        "duplicate": result.duplicate,
                    }
                )
            )
        else:
            line = (
                f"sent {args.reply_kind} {result.notice_id} to {', '.join(recipients)} "
                f"in reply to {args.notice_id}"
            )
            if within_ms:
                line += f"; answer requested within {args.respond_within_hours:g} h"
            print(line)
        return 0

    return asyncio.run(go())


def _reply_state(r: agency_pb2.ReplyInfo) -> str:
    if r.answered_by:
        return "answered"
    if r.overdue:
        return "overdue"
    return "open" if r.respond_by_ms else "no answer requested"


def run_replies(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _node(args) as node:
            try:
                response = await node.replies(open_only=args.open)
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
        if args.json:
            rows = [
                {
                    "notice_id": r.notice_id,
                    "kind": r.kind,
                    "in_reply_to": r.in_reply_to,
                    "from": getattr(r, "from"),
                    "to": r.to,
                    "sent_at_ms": r.sent_at_ms,
                    "sent_at": _iso(r.sent_at_ms),
                    "respond_by_ms": r.respond_by_ms,
                    "respond_by": _iso(r.respond_by_ms) if r.respond_by_ms else None,
                    "answered_by": r.answered_by,
                    "overdue": r.overdue,
                    "state": _reply_state(r),
                }
                for r in response.replies
            ]
            print(json.dumps(rows))
            return 0
        if not response.replies:
            print("no open replies" if args.open else "no replies")
        for r in response.replies:
            deadline = f", respond by {_when(r.respond_by_ms)}" if r.respond_by_ms else ""
            answered = f" by {r.answered_by}" if r.answered_by else ""
            print(
                f"{r.kind:<18} {r.notice_id} {getattr(r, 'from')} -> {r.to} "
                f"(re {r.in_reply_to}), sent {_when(r.sent_at_ms)}{deadline}: "
                f"{_reply_state(r)}{answered}"
            )
        return 0

    return asyncio.run(go())
