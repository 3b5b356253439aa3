"""`broker node ...`: an agency node on the command line.

publish, update, listen, status and restrict; the lifecycle actions (suspend,
resume, withdraw, cancel, extend, flag, lift-flag, request-lift); replies
(report, ask, correct) and the replies list.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from broker.cli import common, lookup, notice_fields, preflight
from broker.core import relay
from broker.core.identity import Party
from broker.errors import BrokerError, InvalidArgument
from broker.v1 import agency_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.client.node import AgencyNode, LifecycleNotice


def _common(p: argparse.ArgumentParser) -> None:
    common.add_agency(p)
    common.add_target(p)
    common.add_keys(p)
    p.add_argument("--state-dir", type=Path, default=Path("data/nodes"), help="node inbox")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: Any) -> None:
    node = sub.add_parser("node", help="publish and receive notices as an agency")
    nsub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")

    pub = nsub.add_parser("publish", help="seal and publish a notice")
    _common(pub)
    _notice_flags(pub)
    pub.set_defaults(func=run_publish)

    up = nsub.add_parser(
        "update", help="publish the next version of a notice you published (same flags)"
    )
    _common(up)
    up.add_argument("notice_id")
    up.add_argument(
        "--version", type=_positive_int, required=True, help="the new version: last version + 1"
    )
    _notice_flags(up)
    up.set_defaults(func=run_publish)

    lis = nsub.add_parser("listen", help="receive notices and lifecycle actions (one line each)")
    _common(lis)
    lis.add_argument("--count", type=int, help="exit after this many new notices")
    lis.add_argument("--timeout", type=float, help="exit after this many seconds")
    lis.set_defaults(func=run_listen)

    wit = nsub.add_parser(
        "witness",
        help="cosign the broker's checkpoints as this agency (trust.toml names the witnesses)",
        description=(
            "Each turn: fetch the latest checkpoint, check it against the one this witness "
            "cosigned last (same tree or a proven extension), then cosign it. A rollback or "
            "a fork is never cosigned. Runs until SIGTERM or --timeout."
        ),
    )
    _common(wit)
    wit.add_argument("--interval", type=float, default=1.0, help="seconds between turns")
    wit.add_argument("--timeout", type=float, help="exit after this many seconds")
    wit.set_defaults(func=run_witness)

    _register_lifecycle(nsub)
    _register_replies(nsub)
    lookup.register_node_lookup(nsub, _common)  # + lookups: `broker node lookup`

    rs = nsub.add_parser("restrict", help="change a published notice's audience restrictions")
    _common(rs)
    rs.add_argument("notice_id")
    rs.add_argument("--sequence", type=int, required=True, help="higher than any earlier update")
    for flag in (
        "allow-agency",
        "deny-agency",
        "allow-country",
        "deny-country",
        "allow-group",
        "deny-group",
    ):
        rs.add_argument(f"--{flag}", action="append", default=[])
    rs.set_defaults(func=run_restrict)

    st = nsub.add_parser("status", help="delivery status and receipts of a notice you published")
    _common(st)
    st.add_argument("notice_id")
    st.add_argument("--version", type=int, default=0)
    st.set_defaults(func=run_status)


def _notice_flags(p: argparse.ArgumentParser) -> None:
    """The content flags of `publish` and `update`: every header field a kind can require."""
    p.add_argument("--kind", required=True, help="catalogue kind, e.g. interpol.red, sis.art32")
    p.add_argument(
        "--purpose", required=True, help="one of the kind's purposes, e.g. locate_arrest"
    )
    p.add_argument("--tlp", default="AMBER", help="CLEAR, GREEN, AMBER, AMBER+STRICT, RED")
    p.add_argument(
        "--data-subject",
        choices=notice_fields.DATA_SUBJECTS,
        help="LED Art. 6 category of the person (default: the kind's only category, else "
        "suspect where the kind allows it; otherwise required)",
    )
    p.add_argument(
        "--evaluation",
        type=notice_fields.evaluation,
        metavar="SOURCE+INFO",
        help="Europol 4x4 evaluation: source A/B/C/X and information 1-4, e.g. B2",
    )
    _section_flag(p)
    p.add_argument(
        "--handling", action="append", default=[], help="handling code H0, H1, H2 or 'H3:<text>'"
    )
    p.add_argument("--to", action="append", help="only these recipients (default: all allowed)")
    p.add_argument("--allow-agency", action="append", default=[], metavar="ID")
    p.add_argument("--deny-agency", action="append", default=[], metavar="ID")
    p.add_argument("--allow-country", action="append", default=[], metavar="CC")
    p.add_argument("--deny-country", action="append", default=[], metavar="CC")
    p.add_argument("--allow-group", action="append", default=[], metavar="GROUP")
    p.add_argument("--deny-group", action="append", default=[], metavar="GROUP")
    p.add_argument(
        "--embargo-hours",
        type=_positive_float,
        help="reach the coordination hubs only, for this many hours (kinds with an embargo)",
    )
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-days", type=_positive_int, default=365)
    expiry.add_argument(
        "--expires-at",
        type=notice_fields.iso_time,
        metavar="ISO-8601",
        help="expiry as a date or UTC time, e.g. 2027-06-30 or 2027-06-30T12:00:00Z",
    )
    lookup.add_selector_flag(p)  # + lookups: --selector TYPE=... (indexes the notice)


def _section_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--section",
        action="append",
        default=[],
        metavar="NAME=TEXT|NAME=@FILE",
        help="a section's content (repeat per section)",
    )
    p.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="one field of a section, e.g. identity.family_name=DOE: the section's content is "
        "then one 'field: value' line per field (the catalogue's content_fields; repeat)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


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


def _node(args: argparse.Namespace, *, checked: bool = False, check_content: bool = False) -> Any:
    """The agency node, once the connection is checked (broker/cli/preflight.py): a
    broker that is not there, or a certificate that cannot work, is named in ~2 s."""
    from broker.client.node import AgencyNode, NodeConfig

    if not checked:
        preflight.check_connection(args.keys_dir, Party("agency", args.agency), args.broker)
    return AgencyNode(
        NodeConfig(
            agency_id=args.agency,
            broker=args.broker,
            keys_dir=args.keys_dir,
            state_dir=args.state_dir,
            check_content=check_content,
        )
    )


def _sections(specs: list[str], fields: Sequence[str] = ()) -> dict[str, bytes]:
    """--section NAME=TEXT|@FILE and --field SECTION.FIELD=VALUE as section contents."""
    out: dict[str, bytes] = {}
    for spec in fields:
        key, sep, value = spec.partition("=")
        section, dot, field = key.partition(".")
        if not sep or not dot or not section or not field or "\n" in value:
            raise InvalidArgument(f"--field {spec!r}: write SECTION.FIELD=VALUE on one line")
        out[section] = out.get(section, b"") + f"{field}: {value}\n".encode()
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise InvalidArgument(f"--section {spec!r}: write NAME=TEXT or NAME=@FILE")
        if name in out:
            raise InvalidArgument(f"section {name} is given twice (--section and --field)")
        if value.startswith("@"):
            try:
                out[name] = Path(value[1:]).read_bytes()
            except OSError as exc:
                raise InvalidArgument(f"--section {name}: cannot read {value[1:]}") from exc
        else:
            out[name] = value.encode()
    if not out:
        raise InvalidArgument("give at least one --section NAME=TEXT or --field SECTION.FIELD=V")
    return out


def _rpc_error(exc: grpc.aio.AioRpcError) -> int:
    print(f"broker: {exc.code().name}: {exc.details()}", file=sys.stderr)
    return 1


def run_publish(args: argparse.Namespace) -> int:
    restrictions = _restrictions(args)
    sections = _sections(args.section, args.field)

    async def go() -> int:
        async with _node(args, check_content=True) as node:
            try:
                view = await node.directory()
                subject = notice_fields.data_subject(view.policy, args.kind, args.data_subject)
                expiry = notice_fields.expiry(args.expires_at, args.expires_in_days, _now_ms())
                if args.embargo_hours:
                    restrictions.embargo_until_ms = _now_ms() + int(args.embargo_hours * HOUR_MS)
                tokens = await lookup.publish_tokens(args, node)  # + lookups
                result = await node.publish(
                    kind=args.kind,
                    purpose=args.purpose,
                    sections=sections,
                    tlp=args.tlp,
                    data_subject=subject,
                    evaluation=args.evaluation,
                    handling_codes=args.handling,
                    restrictions=restrictions,
                    recipients=args.to,
                    expires_in_ms=expiry,
                    notice_id=getattr(args, "notice_id", None),
                    version=getattr(args, "version", 1),
                    index_tokens=tokens,
                )
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
            except InvalidArgument as exc:  # the policy's words, plus the flag that fixes it
                raise InvalidArgument(notice_fields.with_flag(str(exc))) from exc
        if args.json:
            print(
                json.dumps(
                    {
                        "notice_id": result.notice_id,
                        "version": result.version,
                        "duplicate": result.duplicate,
                        "policy_version": result.policy_version,
                        "audience": {k: list(v) for k, v in result.audience.items()},
                        "withheld": [
                            {"agency": w.agency_id, "section": w.section, "reason": w.reason}
                            for w in result.withheld
                        ],
                    }
                )
            )
        else:
            verb = "updated" if result.version > 1 else "published"
            dup = " (already published: nothing changed)" if result.duplicate else ""
            print(f"{verb} {result.notice_id} v{result.version}{dup}")
            for recipient, secs in sorted(result.audience.items()):
                print(f"  {recipient:<12} {', '.join(secs)}")
            for w in result.withheld:
                print(f"  withheld {w.agency_id} {w.section or '(all)'}: {w.reason}")
        return 0

    return asyncio.run(go())


def run_witness(args: argparse.Namespace) -> int:
    from broker.client.witness import run_witness as witness

    if not 0.05 <= args.interval <= 3600:
        raise InvalidArgument("--interval must be between 0.05 and 3600 seconds")

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.timeout:
            loop.call_later(args.timeout, stop.set)
        await _wait_for_broker(args, stop)  # says so while there is none; bad certs raise
        state = args.state_dir / f"{args.agency}.witness.json"
        turns = await witness(
            args.keys_dir, args.agency, args.broker, state, stop=stop, interval_s=args.interval
        )
        print(json.dumps({"cosigned": turns}) if args.json else f"cosigned {turns} time(s)")
        return 0

    return asyncio.run(go())


def run_listen(args: argparse.Namespace) -> int:
    from broker.client.node import ReceivedNotice

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.timeout:
            loop.call_later(args.timeout, stop.set)
        count = 0

        async def handle(notice: ReceivedNotice) -> None:
            nonlocal count
            count += 1
            sections = {k: _text_or_base64(v) for k, v in sorted(notice.sections.items())}
            if args.json:
                print(
                    json.dumps(
                        {
                            "notice_id": notice.notice_id,
                            "version": notice.version,
                            "originator": notice.originator,
                            "kind": notice.header.kind,
                            "purpose": notice.header.purpose,
                            "data_subject": notice_fields.data_subject_name(
                                notice.header.data_subject
                            ),
                            "evaluation": notice.header.evaluation.source
                            + notice.header.evaluation.information,
                            "tlp": relay.TLP_NAMES.get(notice.header.tlp, ""),
                            "handling_codes": list(notice.header.handling_codes),
                            "expires_at_ms": notice.header.expires_at_ms,
                            "expires_at": _iso(notice.header.expires_at_ms),
                            "embargo_until_ms": notice.header.embargo_until_ms,
                            "sections": sections,
                            "obligations": [
                                {
                                    "section": o.section,
                                    "kind": o.kind,
                                    "text": o.text,
                                    "rule": o.rule,
                                    "days": o.days,
                                }
                                for o in notice.obligations
                            ],
                        }
                    ),
                    flush=True,
                )
            else:
                print(
                    f"{notice.originator} {notice.header.kind} {notice.notice_id} "
                    f"v{notice.version}: {', '.join(sections)}",
                    flush=True,
                )
                for o in notice.obligations:
                    if o.kind != "max_retention_days":
                        print(f"  caveat ({o.section}, {o.kind}): {o.text}", flush=True)
            if args.count and count >= args.count:
                stop.set()

        async def on_event(event: agency_pb2.StatusEvent) -> None:
            kind = agency_pb2.EventKind.Name(event.kind)
            if args.json:
                print(
                    json.dumps(
                        {
                            "event": kind.removeprefix("EVENT_KIND_").lower(),
                            "notice_id": event.notice_id,
                            "version": event.version,
                            "recipient": event.recipient,
                            "detail": event.detail,
                        }
                    ),
                    flush=True,
                )
            else:
                print(
                    f"event: {kind} notice {event.notice_id} to {event.recipient}: {event.detail}",
                    flush=True,
                )

        async def on_lifecycle(notice: LifecycleNotice) -> None:
            a = notice.action
            if args.json:
                row: dict[str, object] = {
                    "lifecycle": notice.kind,
                    "notice_id": a.notice_id,
                    "actor": a.actor,
                    "reason": a.reason,
                    "erased": notice.erased,
                }
                if a.version:
                    row["version"] = a.version
                if a.until_ms:
                    row["until_ms"] = a.until_ms
                    row["until"] = _iso(a.until_ms)
                if a.target:
                    row["target"] = a.target
                print(json.dumps(row), flush=True)
            else:
                print(f"lifecycle: {_describe_action(notice)}", flush=True)

        if not await _wait_for_broker(args, stop):
            return 0
        async with _node(args, checked=True) as node:
            try:
                await node.listen(handle, stop=stop, on_event=on_event, on_lifecycle=on_lifecycle)
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
        return 0

    return asyncio.run(go())


async def _wait_for_broker(args: argparse.Namespace, stop: asyncio.Event) -> bool:
    """Until the broker answers: say once, on stderr, that the node waits for it and why,
    then check again every second. A certificate that cannot work is raised at once.
    Returns False when `stop` was set first."""
    party = Party("agency", args.agency)
    said = ""
    while not stop.is_set():
        try:
            await asyncio.to_thread(
                preflight.check_connection, args.keys_dir, party, args.broker, deadline_s=1.0
            )
        except preflight.BrokerUnreachable as exc:
            if str(exc) != said:
                print(f"broker: waiting for a broker at {args.broker}: {exc}", file=sys.stderr)
                said = str(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            continue
        if said:
            print(f"broker: connected to {args.broker}", file=sys.stderr, flush=True)
        return True
    return False


def _text_or_base64(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()


def _restrictions(args: argparse.Namespace) -> notice_pb2.OriginatorRestrictions:
    return notice_pb2.OriginatorRestrictions(
        allow_agencies=args.allow_agency,
        deny_agencies=args.deny_agency,
        allow_countries=args.allow_country,
        deny_countries=args.deny_country,
        allow_groups=args.allow_group,
        deny_groups=args.deny_group,
    )


def run_restrict(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _node(args) as node:
            try:
                withheld = await node.update_restrictions(
                    args.notice_id, _restrictions(args), args.sequence
                )
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
        if args.json:
            print(json.dumps({"notice_id": args.notice_id, "withheld": withheld}))
        else:
            print(
                f"restrictions of {args.notice_id} updated; {withheld} queued deliveries withheld"
            )
        return 0

    return asyncio.run(go())


def run_status(args: argparse.Namespace) -> int:
    """The delivery status of a notice this node published, checked against what it
    sealed, the receipts' signatures and the transparency log (broker/client/verify.py):
    each recipient is verified, unverified or missing."""

    async def go() -> int:
        async with _node(args) as node:
            try:
                report = await node.verify_delivery(args.notice_id, args.version)
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
            except BrokerError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        if args.json:
            print(json.dumps(report.to_json()))
            return 0
        for r in report.recipients:
            state = r.state or "-"
            print(f"{r.recipient:<12} v{r.version} {state:<13} {r.verdict:<10} {r.detail}")
        for a in report.actions:
            state = a.state or "-"
            print(f"{a.recipient:<12} {a.kind:<9} {state:<13} {a.verdict:<10} {a.detail}")
        logged = ", ".join(f"v{v}" for v in report.logged) or "none yet"
        print(f"in the transparency log (cosigned): {logged}")
        for f in report.findings:
            print(f"FINDING {f.describe()}")
        return 0

    return asyncio.run(go())


# -- lifecycle --------------------------------------------------------------------------
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(ms: int) -> str:
    """Times on the terminal: ISO 8601, UTC (as in every --json beside its _ms number)."""
    return _iso(ms)


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
    if a.reason:
        text += f": {a.reason}"
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
