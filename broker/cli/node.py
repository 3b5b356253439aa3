"""`broker node ...`: an agency node on the command line.

publish, update, listen, witness, status and restrict; the lifecycle actions and
replies are in broker/cli/node_actions.py, what they share in broker/cli/nodeargs.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
from typing import TYPE_CHECKING, Any

import grpc

from broker.cli import cases, evidence, fieldlabels, lookup, notice_fields
from broker.cli import requests as requests_cli
from broker.cli.node_actions import _describe_action, _register_lifecycle, _register_replies
from broker.cli.nodeargs import (
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
    _wait_for_broker,
)
from broker.core import relay
from broker.errors import BrokerError, InvalidArgument
from broker.v1 import agency_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.client.node import LifecycleNotice


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

    evidence.register_node(nsub, _common, _section_flag)  # + evidence: attach, fetch

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
    requests_cli.register_node_requests(nsub, _common, _node)  # + judicial
    cases.register_node_case(nsub, _common, _node)  # + judicial: deconfliction

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
        "--suite",
        choices=("classical", "hybrid", "auto"),
        default="classical",
        help="envelope suite: hybrid = post-quantum wraps and signatures; auto = hybrid when "
        "every recipient has PQ keys (docs/post-quantum.md)",
    )
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
    fieldlabels.add_lang_flag(p)  # a refusal naming fields gives their labels


def run_publish(args: argparse.Namespace) -> int:
    restrictions = _restrictions(args)
    sections = _sections(args.section, args.field)

    async def go() -> int:
        async with _node(args, check_content=True) as node:
            view = None
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
                    suite=getattr(args, "suite", "classical"),
                )
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
            except InvalidArgument as exc:  # the policy's words, plus the flag that fixes it
                said = notice_fields.with_flag(str(exc))
                if view is not None:  # and the fields it names, labelled in --lang
                    spec = view.policy.kinds.get(args.kind)
                    named = fieldlabels.refused_fields(spec, sections, str(exc))
                    said += fieldlabels.gloss(view.policy.catalogue.labels, named, args.lang)
                raise InvalidArgument(said) from exc
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
                    "reason": notice.reason or a.reason,  # opened, else the signed digest
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
