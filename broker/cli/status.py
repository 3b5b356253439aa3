"""`broker status`: is the broker there, who am I to it, and how is it doing?

One look, as an agency, an auditor or an administrator: the broker reachable (the
connection checked as broker/cli/preflight.py does), the identity presented, the
active policy version (agencies: the signed activation), the transparency log's
head verified against the log key, and the delivery queues (auditors only: the
broker shows queues to auditors). A check that fails says why on its line; the
exit status is 0 when the broker answered every check the identity may ask, 1
when one failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.cli import common, preflight
from broker.core.auditing import CheckpointError
from broker.core.identity import Party, validate_kind
from broker.errors import BrokerError, InvalidArgument


def _party(text: str) -> Party:
    kind, sep, ident = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"use KIND:ID, e.g. agency:FR-NCB, not {text!r}")
    try:
        return Party(validate_kind(kind), ident)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="broker reachable, identity, policy version, log head, queues",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument(
        "--as",
        dest="party",
        type=_party,
        metavar="KIND:ID",
        help=f"whose certificate to present: agency:ID, auditor:ID or admin:ID "
        f"(default: agency:${common.ENV_AGENCY} when that is set)",
    )
    common.add_target(p)
    common.add_keys(p)
    p.add_argument("--broker-id", default="broker", help="whose log key to trust")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def iso_ms(ms: int) -> str:
    """Unix milliseconds as ISO 8601 in UTC, e.g. 2026-12-02T03:04:05Z."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _who(args: argparse.Namespace) -> Party:
    if args.party is not None:
        party: Party = args.party
        return party
    import os

    agency = os.environ.get(common.ENV_AGENCY)
    if not agency:
        raise InvalidArgument(
            f"say who asks: --as agency:ID (or auditor:ID, admin:ID), or set {common.ENV_AGENCY}"
        )
    return Party("agency", agency)


async def _checks(args: argparse.Namespace, party: Party) -> dict[str, Any]:
    import grpc

    from broker import pki
    from broker.client import audit as ac
    from broker.client.target import channel_target
    from broker.v1 import (
        admin_pb2,
        admin_pb2_grpc,
        agency_pb2,
        agency_pb2_grpc,
        audit_pb2,
        audit_pb2_grpc,
    )

    files = pki.load_party(args.keys_dir, party)
    creds = grpc.ssl_channel_credentials(
        root_certificates=files.ca_cert.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
    out: dict[str, Any] = {}
    target, options = channel_target(args.broker)  # one broker, or its replicas
    async with grpc.aio.secure_channel(target, creds, options=options) as channel:

        async def call(name: str, coro: Any) -> Any:
            try:
                return await coro
            except grpc.aio.AioRpcError as exc:
                out[name] = {"ok": False, "error": f"{exc.code().name}: {exc.details()}"}
                return None

        if party.kind == "agency":
            stub = agency_pb2_grpc.AgencyServiceStub(channel)
            active = await call(
                "policy", stub.GetActivePolicy(agency_pb2.GetActivePolicyRequest(), timeout=5)
            )
            if active is not None:
                signed = bool(active.activation.activation)
                out["policy"] = {"ok": signed, "version": active.version, "signed": signed}
        elif party.kind == "admin":
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            history = await call(
                "policy", admin.PolicyHistory(admin_pb2.PolicyHistoryRequest(), timeout=5)
            )
            if history is not None:
                active = [e for e in history.entries if e.active]
                signed = bool(active) and active[0].admin != "bootstrap"
                version = active[0].version if active else None
                out["policy"] = {"ok": signed, "version": version, "signed": signed}
        else:
            out["policy"] = {"ok": True, "version": None, "note": "agencies see the policy"}
        if party.kind in ("agency", "auditor"):
            audit = audit_pb2_grpc.AuditServiceStub(channel)
            cp = await call("log", audit.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=5))
            if cp is not None:
                out["log"] = _log_head(args, cp, ac)
            if party.kind == "auditor":
                queues = await call(
                    "queues", audit.GetQueues(audit_pb2.GetQueuesRequest(limit=1), timeout=5)
                )
                if queues is not None:
                    out["queues"] = _queues(queues)
            else:
                out["queues"] = {"ok": True, "note": "auditors see the queues"}
        else:
            out["log"] = {"ok": True, "note": "agencies and auditors see the log"}
            out["queues"] = {"ok": True, "note": "auditors see the queues"}
    return out


def _log_head(args: argparse.Namespace, cp: Any, ac: Any) -> dict[str, Any]:
    head: dict[str, Any] = {
        "ok": False,
        "size": cp.size,
        "root": cp.root.hex(),
        "issued_at_ms": cp.issued_at_ms,
        "issued_at": iso_ms(cp.issued_at_ms) if cp.issued_at_ms else None,
        "cosignatures": cp.cosignatures,
    }
    try:
        trust = ac.load_trust(Path(args.keys_dir), args.broker_id)
        trust.open(cp.note)
    except BrokerError as exc:
        head["error"] = f"cannot verify the checkpoint: {exc}"
        return head
    except CheckpointError as exc:
        head["error"] = f"the checkpoint does not verify: {exc}"
        return head
    head["ok"] = True
    return head


def _queues(resp: Any) -> dict[str, Any]:
    keys = ("pending", "in_flight", "delivered", "dead", "withheld", "embargoed")
    totals = {k: sum(getattr(r, k) for r in resp.recipients) for k in keys}
    oldest = [r.oldest_waiting_ms for r in resp.recipients if r.oldest_waiting_ms]
    return {
        "ok": True,
        **totals,
        "recipients": len(resp.recipients),
        "oldest_waiting_ms": min(oldest) if oldest else None,
        "oldest_waiting": iso_ms(min(oldest)) if oldest else None,
    }


def run(args: argparse.Namespace) -> int:
    party = _who(args)
    report: dict[str, Any] = {
        "broker": {"ok": False, "target": args.broker},
        "identity": {"ok": False, "party": party.uri()},
    }
    try:
        preflight.check_connection(args.keys_dir, party, args.broker)
    except preflight.LocalCertificateProblem as exc:
        report["identity"]["error"] = str(exc)
    except BrokerError as exc:
        report["broker"]["error"] = str(exc)
        report["identity"]["ok"] = None
    else:
        report["broker"]["ok"] = True
        report["identity"]["ok"] = True
        report.update(asyncio.run(_checks(args, party)))
    ok = all(v.get("ok") is not False for v in report.values())
    if args.json:
        print(json.dumps({"ok": ok, **report}, indent=2))
    else:
        _print(report)
    return 0 if ok else 1


def _line(name: str, row: dict[str, Any], text: str) -> None:
    mark = {True: "ok  ", False: "FAIL", None: "-   "}[row.get("ok")]
    detail = row.get("error") or row.get("note") or text
    print(f"{mark} {name:<9} {detail}")


def _print(report: dict[str, Any]) -> None:
    b = report["broker"]
    _line("broker", b, f"reachable at {b['target']} (TLS handshake and certificate accepted)")
    _line("identity", report["identity"], report["identity"]["party"])
    if "policy" in report:
        p = report["policy"]
        signed = "signed activation" if p.get("signed") else "UNSIGNED bootstrap bundle"
        _line("policy", p, f"{p.get('version')} ({signed})")
    if "log" in report:
        g = report["log"]
        _line(
            "log",
            g,
            f"{g.get('size')} entries, root {str(g.get('root'))[:16]}…, signed at "
            f"{g.get('issued_at')}, {g.get('cosignatures')} cosignature(s), signature verified",
        )
    if "queues" in report:
        q = report["queues"]
        oldest = f", oldest waiting since {q['oldest_waiting']}" if q.get("oldest_waiting") else ""
        _line(
            "queues",
            q,
            f"{q.get('pending')} pending ({q.get('embargoed')} embargoed), "
            f"{q.get('in_flight')} in flight, {q.get('dead')} dead letters, "
            f"{q.get('delivered')} delivered over {q.get('recipients')} recipients{oldest}",
        )
