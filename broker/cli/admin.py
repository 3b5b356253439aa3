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
from google.protobuf.json_format import MessageToDict

from broker.cli import common, preflight
from broker.core.identity import Party
from broker.errors import InvalidArgument
from broker.v1 import admin_pb2, notice_pb2


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

    e = psub.add_parser("explain", help="the decision for a draft notice and one recipient")
    _connection(e)
    e.add_argument("--originator", required=True)
    e.add_argument("--recipient", required=True)
    e.add_argument("--kind", required=True)
    e.add_argument("--purpose", required=True)
    e.add_argument("--tlp", default="AMBER")
    e.add_argument("--section", action="append", default=[], required=True)
    e.add_argument("--handling", action="append", default=[])
    e.add_argument("--allow-agency", action="append", default=[])
    e.add_argument("--deny-country", action="append", default=[])
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
    a.add_argument("--reason", required=True)
    a.set_defaults(func=run_activate)

    h = psub.add_parser("history", help="activations, newest first")
    _connection(h)
    h.set_defaults(func=run_history)

    r = psub.add_parser("rollback", help="activate an earlier bundle version again")
    _connection(r)
    r.add_argument("version")
    r.add_argument("--reason", required=True)
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
        g.add_argument("--reason", required=True)
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
    data = MessageToDict(message, preserving_proto_field_name=True)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(_human(data))


def _human(data: Any, indent: str = "") -> str:
    if isinstance(data, dict):
        lines = []
        for k, v in data.items():
            if isinstance(v, dict | list):
                lines.append(f"{indent}{k}:")
                lines.append(_human(v, indent + "  "))
            else:
                lines.append(f"{indent}{k}: {v}")
        return "\n".join(lines)
    if isinstance(data, list):
        return "\n".join(
            (f"{indent}-\n" + _human(v, indent + "  ")) if isinstance(v, dict) else f"{indent}- {v}"
            for v in data
        )
    return f"{indent}{data}"


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
    request = admin_pb2.ExplainDecisionRequest(
        draft=notice_pb2.NoticeHeader(
            originator=args.originator,
            kind=args.kind,
            purpose=args.purpose,
            tlp=tlp,
            handling_codes=args.handling,
        ),
        restrictions=notice_pb2.OriginatorRestrictions(
            allow_agencies=args.allow_agency, deny_countries=args.deny_country
        ),
        sections=args.section,
        recipient=args.recipient,
    )
    if args.bundle:
        request.bundle.CopyFrom(act.bundle_message(read_bundle_dir(args.bundle)))
    return _run(args, lambda c: c.call("ExplainDecision", request))


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


def run_rollback(args: argparse.Namespace) -> int:
    return _run(args, lambda c: c.rollback(args.version, args.reason))


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
            }
            for e, signed in zip(resp.agencies, resp.signed, strict=True)
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for r in rows:
            signed = "signed" if r["signed"] else "UNSIGNED (bootstrap: run sign-registry)"
            print(
                f"{r['id']:<12} {r['country']:<3} {r['status']:<10} "
                f"roles={','.join(r['roles']) or '-':<16} key={r['key_serial']} "
                f"rev={r['revision']} {signed}"
            )
        return 0

    return asyncio.run(go())


def run_actions(args: argparse.Namespace) -> int:
    request = admin_pb2.ListAdminActionsRequest(limit=args.limit)
    return _run(args, lambda c: c.call("ListAdminActions", request))
