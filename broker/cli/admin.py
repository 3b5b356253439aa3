"""`broker admin ...`: policy bundles and the agency registry (administrator identity)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from broker.cli import common, fieldlabels, notice_fields, preflight, render
from broker.core.identity import Party
from broker.errors import InvalidArgument
from broker.v1 import admin_pb2, notice_pb2

POLICY_REASON = (
    "why this bundle (signed and kept in the transparency log for auditors: describe the "
    "policy change, never name a person)"
)


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--admin", required=True, help="administrator id (urn:broker:admin:<id>)")
    common.add_target(p)
    common.add_keys(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: Any) -> None:
    admin = sub.add_parser("admin", help="administer policy bundles and the agency registry")
    asub = admin.add_subparsers(dest="admin_command", required=True, metavar="AREA")

    policy = asub.add_parser("policy", help="validate, explain, diff, activate, roll back")
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    v = psub.add_parser("validate", help="compile a bundle directory offline")
    v.add_argument("dir", type=Path)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=run_validate)
    fieldlabels.register_kinds(psub)  # `kinds DIR --lang fr`: sections and fields, labelled

    e = psub.add_parser(
        "explain",
        help="the decision for a draft notice and one recipient",
        description="Explain which sections of a draft notice one recipient would get, by "
        "which rules. Only the kind, the originator and the recipient are needed: what the "
        "draft leaves out is filled with the kind's defaults (its first purpose and data "
        "subject, evaluation B2 and handling H0 where required, its required sections), "
        "and the answer lists what it assumed.",
    )
    _connection(e)
    e.add_argument("--originator", required=True, help="the publishing agency, e.g. FR-NCB")
    e.add_argument("--recipient", required=True, help="the agency asked about, e.g. DE-BKA")
    e.add_argument("--kind", required=True, help="catalogue kind, e.g. interpol.yellow")
    e.add_argument("--purpose", help="default: the kind's first purpose")
    e.add_argument("--tlp", default="AMBER", help="CLEAR, GREEN, AMBER, AMBER+STRICT, RED")
    e.add_argument(
        "--section",
        action="append",
        default=[],
        help="a section to explain (repeat; default: every section of the kind)",
    )
    e.add_argument(
        "--data-subject",
        choices=notice_fields.DATA_SUBJECTS,
        help="default: the kind's first category",
    )
    e.add_argument(
        "--evaluation",
        type=notice_fields.evaluation,
        metavar="SOURCE+INFO",
        help="e.g. B2 (default where the kind requires one: B2)",
    )
    e.add_argument("--handling", action="append", default=[], help="H0, H1, H2 or 'H3:<text>'")
    e.add_argument("--allow-agency", action="append", default=[], metavar="ID")
    e.add_argument("--deny-agency", action="append", default=[], metavar="ID")
    e.add_argument("--allow-country", action="append", default=[], metavar="CC")
    e.add_argument("--deny-country", action="append", default=[], metavar="CC")
    e.add_argument("--allow-group", action="append", default=[], metavar="GROUP")
    e.add_argument("--deny-group", action="append", default=[], metavar="GROUP")
    e.add_argument("--bundle", type=Path, help="explain under this draft bundle")
    e.set_defaults(func=run_explain)

    d = psub.add_parser("diff", help="what a draft bundle would change, over recent notices")
    _connection(d)
    d.add_argument("dir", type=Path)
    d.add_argument("--corpus", type=int, default=1000)
    d.set_defaults(func=run_diff)

    a = psub.add_parser("activate", help="sign and activate a bundle directory")
    _connection(a)
    a.add_argument("dir", type=Path)
    a.add_argument("--reason", required=True, help=POLICY_REASON)
    a.set_defaults(func=run_activate)

    h = psub.add_parser("history", help="activations, newest first")
    _connection(h)
    h.set_defaults(func=run_history)

    r = psub.add_parser("rollback", help="activate an earlier bundle version again")
    _connection(r)
    r.add_argument("version", help="the version to activate again: any unique prefix of it")
    r.add_argument("--reason", required=True, help=POLICY_REASON)
    r.set_defaults(func=run_rollback)

    agency = asub.add_parser("agency", help="register, update, suspend, revoke, rotate keys")
    gsub = agency.add_subparsers(dest="agency_command", required=True, metavar="ACTION")
    for name in ("register", "update"):
        g = gsub.add_parser(name, help=f"{name} an agency")
        _connection(g)
        g.add_argument("id")
        g.add_argument("--country", required=name == "register")
        g.add_argument("--role", action="append", default=[])
        g.add_argument("--group", action="append", default=[])
        g.add_argument("--purpose", action="append", default=[])
        if name == "register":
            g.add_argument("--statement", type=Path, required=True, help="statement.bin")
        g.set_defaults(func=run_register if name == "register" else run_update)
    for status, verb in (("suspended", "suspend"), ("revoked", "revoke"), ("active", "reactivate")):
        g = gsub.add_parser(verb, help=f"{verb} an agency")
        _connection(g)
        g.add_argument("id")
        g.add_argument(
            "--reason",
            required=True,
            help="why (the broker keeps only its SHA-256; keep the text in your own records)",
        )
        g.set_defaults(func=run_status, status=status)
    g = gsub.add_parser("rotate-keys", help="bind a new CA-signed key statement")
    _connection(g)
    g.add_argument("id")
    g.add_argument("--statement", type=Path, required=True)
    g.set_defaults(func=run_rotate)
    g = gsub.add_parser("sign-registry", help="sign the entries bootstrapped from registry.toml")
    _connection(g)
    g.set_defaults(func=run_sign_registry)
    g = gsub.add_parser("list", help="the registry")
    _connection(g)
    g.set_defaults(func=run_list)

    act = asub.add_parser("actions", help="recorded administrator actions, newest first")
    _connection(act)
    act.add_argument("--limit", type=int, default=50)
    act.set_defaults(func=run_actions)


def _client(args: argparse.Namespace) -> Any:
    from broker.client.admin import AdminClient

    party = Party("admin", args.admin)
    preflight.check_connection(args.keys_dir, party, args.broker)  # the cause, in ~2 s
    return AdminClient(args.keys_dir, args.admin, args.broker)


def _run(args: argparse.Namespace, body: Callable[[Any], Awaitable[Any]]) -> int:
    async def go() -> int:
        async with _client(args) as client:
            try:
                result = await body(client)
            except grpc.aio.AioRpcError as exc:
                print(f"broker: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
        _print(args, result)
        return 0

    return asyncio.run(go())


def _print(args: argparse.Namespace, message: Any) -> None:
    """One schema for --json (broker/cli/render.py), tables with ISO times otherwise."""
    data = render.to_data(message)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render.text(data))


def run_validate(args: argparse.Namespace) -> int:
    from broker.bundles import read_bundle_dir
    from broker.core.policy import compile_bundle
    from broker.core.policy.bundle import PolicyError
    from broker.server.admin_service import diagnostic

    files = read_bundle_dir(args.dir)
    try:
        bundle = compile_bundle(files)
    except PolicyError as exc:
        d = diagnostic(exc)
        where = f"{args.dir / d.file}:{d.line}:{d.column}" if d.file else str(args.dir)
        if args.json:
            print(
                json.dumps(
                    {
                        "ok": False,
                        "file": d.file,
                        "line": d.line,
                        "column": d.column,
                        "message": d.message,
                    }
                )
            )
        else:
            print(f"{where}: {d.message}", file=sys.stderr)
        return 1
    summary = {
        "ok": True,
        "version": bundle.version,
        "kinds": len(bundle.kinds),
        "files": len(files),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.dir}: valid bundle {bundle.version}")
        print(f"  {len(bundle.kinds)} kinds, {len(files)} files")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from broker.bundles import read_bundle_dir
    from broker.core import activation as act
    from broker.core.relay import TLP_NAMES

    tlp = {name: value for value, name in TLP_NAMES.items()}.get(args.tlp)
    if tlp is None:
        raise InvalidArgument(f"unknown TLP {args.tlp!r}")
    draft = notice_pb2.NoticeHeader(
        originator=args.originator,
        kind=args.kind,
        purpose=args.purpose or "",
        tlp=tlp,
        handling_codes=args.handling,
    )
    if args.data_subject:
        draft.data_subject = notice_fields.data_subject_value(args.data_subject)  # type: ignore[assignment]
    if args.evaluation:
        draft.evaluation.source, draft.evaluation.information = args.evaluation
    request = admin_pb2.ExplainDecisionRequest(
        draft=draft,
        restrictions=notice_pb2.OriginatorRestrictions(
            allow_agencies=args.allow_agency,
            deny_agencies=args.deny_agency,
            allow_countries=args.allow_country,
            deny_countries=args.deny_country,
            allow_groups=args.allow_group,
            deny_groups=args.deny_group,
        ),
        sections=args.section,
        recipient=args.recipient,
    )
    if args.bundle:
        request.bundle.CopyFrom(act.bundle_message(read_bundle_dir(args.bundle)))

    async def go() -> int:
        async with _client(args) as client:
            try:
                resp = await client.call("ExplainDecision", request)
            except grpc.aio.AioRpcError as exc:
                print(f"broker: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
        data = render.to_data(resp)
        for d in data["decisions"]:  # obligations as objects; the text form is in details
            d["obligations"] = d.pop("obligation_details")
        if args.json:
            print(json.dumps(data, indent=2))
            return 0
        print(f"{args.originator} -> {resp.recipient} under policy {resp.policy_version[:16]}")
        if resp.assumed:
            print(f"assumed: {', '.join(resp.assumed)}")
        rows = [
            {
                "section": d["section"],
                "allowed": d["allowed"],
                "rules": d["rules"],
                "reason": d["reason"],
                "obligations": [f"{o['kind']}: {o['text'] or o['days']}" for o in d["obligations"]],
            }
            for d in data["decisions"]
        ]
        print(render.table(rows, ["section", "allowed", "rules", "reason", "obligations"]))
        return 0

    return asyncio.run(go())


def run_diff(args: argparse.Namespace) -> int:
    from broker.bundles import read_bundle_dir
    from broker.core import activation as act

    request = admin_pb2.DiffPolicyRequest(
        bundle=act.bundle_message(read_bundle_dir(args.dir)), corpus=args.corpus
    )
    return _run(args, lambda c: c.call("DiffPolicy", request))


def run_activate(args: argparse.Namespace) -> int:
    from broker.bundles import read_bundle_dir

    files = read_bundle_dir(args.dir)
    return _run(args, lambda c: c.activate(files, args.reason))


def run_history(args: argparse.Namespace) -> int:
    return _run(args, lambda c: c.call("PolicyHistory", admin_pb2.PolicyHistoryRequest()))


def resolve_version(prefix: str, versions: list[str]) -> str:
    """The one version `prefix` starts; InvalidArgument naming the candidates otherwise."""
    if not prefix:
        raise InvalidArgument("give a policy version (any unique prefix of it)")
    matches = sorted({v for v in versions if v.startswith(prefix.lower())})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        known = ", ".join(v[:12] for v in versions[:5]) or "none"
        raise InvalidArgument(
            f"no policy version starts with {prefix!r} (recent: {known}; see "
            "`broker admin policy history`)"
        )
    shown = ", ".join(m[:16] for m in matches)
    raise InvalidArgument(
        f"{prefix!r} is the start of {len(matches)} versions ({shown}): give more characters"
    )


def run_rollback(args: argparse.Namespace) -> int:
    async def body(client: Any) -> Any:
        history = await client.call("PolicyHistory", admin_pb2.PolicyHistoryRequest())
        version = resolve_version(args.version, [e.version for e in history.entries])
        return await client.rollback(version, args.reason)

    return _run(args, body)


def _statement(path: Path) -> notice_pb2.SignedKeyStatement:
    try:
        return notice_pb2.SignedKeyStatement.FromString(path.read_bytes())
    except OSError as exc:
        raise InvalidArgument(f"cannot read key statement {path}") from exc


def run_register(args: argparse.Namespace) -> int:
    statement = _statement(args.statement)
    return _run(
        args,
        lambda c: c.register(
            args.id,
            args.country,
            statement,
            roles=args.role,
            groups=args.group,
            purposes=args.purpose,
        ),
    )


def run_update(args: argparse.Namespace) -> int:
    return _run(
        args,
        lambda c: c.update(
            args.id,
            country=args.country,
            roles=args.role or None,
            groups=args.group or None,
            purposes=args.purpose or None,
        ),
    )


def run_status(args: argparse.Namespace) -> int:
    return _run(args, lambda c: c.set_status(args.id, args.status, args.reason))


def run_rotate(args: argparse.Namespace) -> int:
    statement = _statement(args.statement)
    return _run(args, lambda c: c.rotate_keys(args.id, statement))


def run_sign_registry(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _client(args) as client:
            try:
                n = await client.sign_registry()
            except grpc.aio.AioRpcError as exc:
                print(f"broker: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
        print(json.dumps({"signed": n}) if args.json else f"signed {n} bootstrap entries")
        return 0

    return asyncio.run(go())


def run_list(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _client(args) as client:
            try:
                resp = await client.call("ListAgencies", admin_pb2.ListAgenciesRequest())
            except grpc.aio.AioRpcError as exc:
                print(f"broker: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
        rows = [
            {
                "id": e.id,
                "country": e.country,
                "roles": list(e.roles),
                "groups": list(e.groups),
                "purposes": list(e.purposes),
                "status": e.status,
                "key_serial": e.key_serial,
                "revision": e.revision,
                "signed": bool(signed.entry),
                "not_after_ms": _signed_until(signed),
                "not_after": render.iso_ms(_signed_until(signed)) or None,
            }
            for e, signed in zip(resp.agencies, resp.signed, strict=True)
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for r in rows:
            until = f"until {r['not_after']}" if r["not_after"] else ""
            signed = (
                f"signed {until}".strip()
                if r["signed"]
                else "UNSIGNED (bootstrap: run sign-registry)"
            )
            print(
                f"{r['id']:<12} {r['country']:<3} {r['status']:<10} "
                f"roles={','.join(r['roles']) or '-':<16} key={r['key_serial']} "
                f"rev={r['revision']} {signed}"
            )
        return 0

    return asyncio.run(go())


def _signed_until(signed: admin_pb2.SignedAgencyEntry) -> int:
    """Until when nodes accept a signed entry (0: never signed); the bytes as signed."""
    if not signed.entry:
        return 0
    try:
        return admin_pb2.AgencyEntry.FromString(signed.entry).not_after_ms
    except DecodeError:
        return 0


def run_actions(args: argparse.Namespace) -> int:
    request = admin_pb2.ListAdminActionsRequest(limit=args.limit)
    return _run(args, lambda c: c.call("ListAdminActions", request))
