"""`broker node publish|listen|status`: an agency node on the command line."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

from broker.errors import InvalidArgument
from broker.v1 import agency_pb2, notice_pb2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agency", required=True, help="this node's agency id, e.g. FR-NCB")
    p.add_argument("--broker", default="127.0.0.1:7443", help="broker host:port")
    p.add_argument("--keys-dir", type=Path, default=Path("data/keys"), help="deployment keys")
    p.add_argument("--state-dir", type=Path, default=Path("data/nodes"), help="node inbox")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: Any) -> None:
    node = sub.add_parser("node", help="publish and receive notices as an agency")
    nsub = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")

    pub = nsub.add_parser("publish", help="seal and publish a notice")
    _common(pub)
    pub.add_argument("--kind", required=True, help="catalogue kind, e.g. interpol.red")
    pub.add_argument("--purpose", required=True, help="e.g. locate_arrest")
    pub.add_argument("--tlp", default="AMBER", help="CLEAR, GREEN, AMBER, AMBER+STRICT, RED")
    pub.add_argument(
        "--section",
        action="append",
        default=[],
        metavar="NAME=TEXT|NAME=@FILE",
        help="a section's content (repeat per section)",
    )
    pub.add_argument("--handling", action="append", default=[], help="handling code, e.g. H2")
    pub.add_argument("--to", action="append", help="only these recipients (default: all allowed)")
    pub.add_argument("--allow-agency", action="append", default=[])
    pub.add_argument("--deny-agency", action="append", default=[])
    pub.add_argument("--allow-country", action="append", default=[])
    pub.add_argument("--deny-country", action="append", default=[])
    pub.add_argument("--allow-group", action="append", default=[])
    pub.add_argument("--deny-group", action="append", default=[])
    pub.add_argument("--expires-in-days", type=int, default=365)
    pub.set_defaults(func=run_publish)

    lis = nsub.add_parser("listen", help="receive notices (prints one line per notice)")
    _common(lis)
    lis.add_argument("--count", type=int, help="exit after this many new notices")
    lis.add_argument("--timeout", type=float, help="exit after this many seconds")
    lis.set_defaults(func=run_listen)

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


def _node(args: argparse.Namespace) -> Any:
    from broker.client.node import AgencyNode, NodeConfig

    return AgencyNode(
        NodeConfig(
            agency_id=args.agency,
            broker=args.broker,
            keys_dir=args.keys_dir,
            state_dir=args.state_dir,
        )
    )


def _sections(specs: list[str]) -> dict[str, bytes]:
    out = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise InvalidArgument(f"--section {spec!r}: write NAME=TEXT or NAME=@FILE")
        if value.startswith("@"):
            try:
                out[name] = Path(value[1:]).read_bytes()
            except OSError as exc:
                raise InvalidArgument(f"--section {name}: cannot read {value[1:]}") from exc
        else:
            out[name] = value.encode()
    if not out:
        raise InvalidArgument("give at least one --section NAME=TEXT")
    return out


def _rpc_error(exc: grpc.aio.AioRpcError) -> int:
    print(f"broker: {exc.code().name}: {exc.details()}", file=sys.stderr)
    return 1


def run_publish(args: argparse.Namespace) -> int:
    restrictions = _restrictions(args)
    sections = _sections(args.section)

    async def go() -> int:
        async with _node(args) as node:
            try:
                result = await node.publish(
                    kind=args.kind,
                    purpose=args.purpose,
                    sections=sections,
                    tlp=args.tlp,
                    handling_codes=args.handling,
                    restrictions=restrictions,
                    recipients=args.to,
                    expires_in_days=args.expires_in_days,
                )
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
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
            print(f"published {result.notice_id} v{result.version}")
            for recipient, secs in sorted(result.audience.items()):
                print(f"  {recipient:<12} {', '.join(secs)}")
            for w in result.withheld:
                print(f"  withheld {w.agency_id} {w.section or '(all)'}: {w.reason}")
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
                            "sections": sections,
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
            if args.count and count >= args.count:
                stop.set()

        async def on_event(event: agency_pb2.StatusEvent) -> None:
            print(
                f"event: {agency_pb2.EventKind.Name(event.kind)} notice {event.notice_id} "
                f"to {event.recipient}: {event.detail}",
                flush=True,
            )

        async with _node(args) as node:
            try:
                await node.listen(handle, stop=stop, on_event=on_event)
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
        return 0

    return asyncio.run(go())


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
    async def go() -> int:
        async with _node(args) as node:
            try:
                status = await node.delivery_status(args.notice_id, args.version)
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
        rows = [
            {
                "recipient": r.recipient,
                "version": r.version,
                "state": agency_pb2.DeliveryState.Name(r.state).removeprefix("DELIVERY_STATE_"),
                "attempts": r.attempts,
                "sections": list(r.sections),
                "receipt": bool(r.receipt.receipt),
            }
            for r in status.recipients
        ]
        if args.json:
            print(json.dumps(rows))
        else:
            for row in rows:
                print(
                    f"{row['recipient']:<12} v{row['version']} {row['state']:<13} "
                    f"attempts={row['attempts']} receipt={'yes' if row['receipt'] else 'no'}"
                )
        return 0

    return asyncio.run(go())
