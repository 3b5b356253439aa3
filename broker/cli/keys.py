"""`broker keys`: create the deployment CA, issue, rotate and revoke credentials.

A thin shell over :mod:`broker.pki`: parse arguments, call it, print what was
written. Errors are BrokerErrors, reported once by ``broker.cli.main``.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker import lookup_keys, pki, pqlog
from broker.cli import common
from broker.core.identity import (
    PARTY_KINDS,
    IdentityError,
    Party,
    validate_kind,
    verify_key_statement,
)
from broker.errors import BrokerError, NotFound
from broker.v1 import notice_pb2

DEFAULT_DIR = "data/keys"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` command and its sub-commands to the ``broker`` parser."""
    keys = subparsers.add_parser(
        "keys",
        help="deployment CA, certificates and agency key statements",
        description=(
            "Create the deployment CA and issue, rotate and revoke party credentials. "
            "See keys/README.md for the layout and who holds which file."
        ),
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--dir",
            type=Path,
            default=common.env_keys(),
            help=f"keys directory (env {common.ENV_KEYS})",
        )
        return p

    def add_party(p: argparse.ArgumentParser) -> None:
        p.add_argument("kind", choices=PARTY_KINDS, help="party kind")
        p.add_argument("id", help="party id, e.g. FR-NCB")

    def add_names(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dns", action="append", default=[], metavar="NAME", help="DNS SAN (repeatable)"
        )
        p.add_argument(
            "--ip", action="append", default=[], metavar="ADDR", help="IP SAN (repeatable)"
        )
        p.add_argument(
            "--pq",
            action="store_true",
            help="agency: also post-quantum keys (ML-DSA-65, ML-KEM-768+X25519) for the "
            "hybrid suite; rotate keeps them once an agency has them. broker: also an ML-DSA-65 "
            "log key (log-pq.key, log-pq.pub), so checkpoints are signed hybrid "
            "(docs/post-quantum.md)",
        )
        p.add_argument(
            "--days",
            type=_positive_int,
            default=825,
            help="certificate validity in days (default 825)",
        )

    p = add("init", "create the deployment CA and the broker's certificate")
    p.add_argument("--broker-id", default="broker", help="broker id (default: broker)")
    p.add_argument("--ca-name", default="Sealed Notice Broker CA", help="CA common name")
    p.add_argument(
        "--ca-days", type=_positive_int, default=3650, help="CA validity in days (default 3650)"
    )
    add_names(p)
    p.set_defaults(func=_cmd_init)

    p = add("issue", "issue credentials for a party (for an agency: TLS, keys and statement)")
    add_party(p)
    add_names(p)
    p.add_argument(
        "--no-lookup-key",
        action="store_true",
        help="lookup service only: no OPRF key of its own (deal-lookup-shares gives it a share)",
    )
    p.set_defaults(func=_cmd_issue)

    p = add(
        "rotate",
        "replace an existing party's credentials; an agency gets new keys and statement serial+1",
    )
    add_party(p)
    add_names(p)
    p.set_defaults(func=_cmd_rotate)

    p = add(
        "renew",
        "re-sign an agency's current keys in a new short-lived statement (serial+1); "
        "then register it: broker admin agency rotate-keys",
    )
    p.add_argument("id", help="agency id, e.g. FR-NCB")
    p.add_argument(
        "--statement-days",
        type=_positive_int,
        default=pki.DEFAULT_STATEMENT_DAYS,
        help=f"statement validity in days (default {pki.DEFAULT_STATEMENT_DAYS})",
    )
    p.set_defaults(func=_cmd_renew)

    p = add("revoke", "record a party as revoked: the broker refuses it from then on")
    add_party(p)
    p.set_defaults(func=_cmd_revoke)

    p = add(  # + lookups: a t-of-n threshold of lookup-key holders
        "deal-lookup-shares",
        "deal a new OPRF key as t-of-n shares to lookup-key services issued without one",
    )
    p.add_argument("ids", nargs="+", metavar="ID", help="the holders, each `keys issue lookup`-ed")
    p.add_argument("--threshold", type=_positive_int, required=True, help="t: holders needed")
    p.set_defaults(func=_cmd_deal_shares)

    p = add("show", "list the CA, parties, URIs, expiry and statement serials")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_show)


# --- output helpers -------------------------------------------------------------------


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(os.stat(path).st_mode):04o}"


def _print_written(paths: Sequence[Path]) -> None:
    for path in paths:
        print(f"  wrote {path} ({_mode(path)})")


def _party(kind: str, ident: str) -> Party:
    return Party(validate_kind(kind), ident)


def _print_files(files: pki.PartyFiles) -> None:
    paths = [files.key, files.cert, files.ca_cert]
    if isinstance(files, pki.AgencyFiles):
        paths += [files.signing_key, files.encryption_key, files.statement]
        if _has_pq_keys(files.directory.parent.parent, Party("agency", files.directory.name)):
            paths += [files.directory / pki.PQ_SIGNING_KEY, files.directory / pki.PQ_ENCRYPTION_KEY]
    _print_written(paths)
    if isinstance(files, pki.AgencyFiles):
        serial = pki.unverified_statement_serial(pki.read_statement(files.statement))
        print(f"  key statement serial {serial}")


def _has_pq_keys(root: Path, party: Party) -> bool:
    """True iff the party's current statement carries post-quantum keys (rotate keeps them)."""
    path = pki.party_directory(root, party) / pki.STATEMENT
    if not path.is_file():
        return False
    statement = notice_pb2.KeyStatement.FromString(pki.read_statement(path).statement)
    return bool(statement.pq_signing_key)


def _issue(args: argparse.Namespace, party: Party) -> pki.PartyFiles:
    if party.kind == "agency":
        return pki.issue_agency(
            args.dir,
            party.id,
            dns_names=args.dns,
            ip_addresses=args.ip,
            days=args.days,
            pq=args.pq or _has_pq_keys(args.dir, party),
        )
    files = pki.issue_certificate(
        args.dir, party, dns_names=args.dns, ip_addresses=args.ip, days=args.days
    )
    if party.kind == "broker" and args.pq:  # + hybrid checkpoints: kept once it exists
        print(f"  wrote {pqlog.ensure_pq_log_key(args.dir, party.id)} (ML-DSA-65 log key)")
    key_path = pki.party_directory(args.dir, party) / lookup_keys.OPRF_KEY
    skip = getattr(args, "no_lookup_key", False) and not key_path.exists()
    if party.kind == "lookup" and not skip:  # + lookups: its OPRF key (kept), signed statement
        print(f"  wrote {lookup_keys.ensure_lookup_key(args.dir, party.id)} (OPRF public key)")
    return files


# --- commands -------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    broker = Party("broker", args.broker_id)
    pki.subject_alt_names(broker, args.dns, args.ip)  # validate before writing anything
    ca_cert = pki.generate_ca(args.dir, name=args.ca_name, days=args.ca_days)
    print(f"created deployment CA in {ca_cert.parent}")
    _print_written([ca_cert.parent / pki.CA_KEY, ca_cert])
    files = pki.issue_certificate(
        args.dir, broker, dns_names=args.dns, ip_addresses=args.ip, days=args.days
    )
    print(f"issued {broker.uri()}")
    _print_files(files)
    if args.pq:  # + hybrid checkpoints
        print(f"  wrote {pqlog.ensure_pq_log_key(args.dir, broker.id)} (ML-DSA-65 log key)")
    print(
        f"next: `broker keys issue agency <ID> --dir {args.dir}` for each agency; "
        f"move {ca_cert.parent / pki.CA_KEY} offline once issuing is done"
    )
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    party = _party(args.kind, args.id)
    files = _issue(args, party)
    print(f"issued {party.uri()}")
    _print_files(files)
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    party = _party(args.kind, args.id)
    directory = pki.party_directory(args.dir, party)
    cert_path = directory / pki.TLS_CERT
    if not cert_path.is_file():
        raise NotFound(
            f"{party.uri()} has no credentials in {directory} to rotate; "
            f"run `broker keys issue {party.kind} {party.id} --dir {args.dir}`"
        )
    if not args.dns and not args.ip:
        # Keep the names the current certificate is used under.
        args.dns, args.ip = pki.certificate_names(pki.load_certificate(cert_path))
    files = _issue(args, party)
    print(f"rotated {party.uri()} (previous files kept in {directory / pki.OLD_DIR})")
    _print_files(files)
    return 0


def _cmd_renew(args: argparse.Namespace) -> int:
    files = pki.renew_statement(args.dir, args.id, statement_days=args.statement_days)
    serial = pki.unverified_statement_serial(pki.read_statement(files.statement))
    print(
        f"renewed the key statement of agency {args.id}: serial {serial}, valid "
        f"{args.statement_days} days; register it with `broker admin agency rotate-keys {args.id}`"
    )
    return 0


def _cmd_deal_shares(args: argparse.Namespace) -> int:
    paths = lookup_keys.deal_shares(args.dir, args.ids, args.threshold)
    print(f"dealt a {args.threshold}-of-{len(args.ids)} lookup key; the whole key was never stored")
    _print_written(paths)
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    party = _party(args.kind, args.id)
    already = party.uri() in pki.revoked_parties(args.dir)
    pki.revoke(args.dir, party)
    path = Path(args.dir) / pki.CA_DIR / pki.REVOKED
    if already:
        print(f"{party.uri()} was already revoked ({path})")
    else:
        print(f"revoked {party.uri()}: recorded in {path}")
        print(
            "  a broker using this keys directory applies it within a second (its streams "
            "closed, its queued deliveries withheld); copy revoked.txt to any other broker"
        )
    return 0


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _iso_ms(ms: int) -> str:
    return _iso(datetime.fromtimestamp(ms / 1000, UTC))


def _describe(root: Path, now: datetime) -> dict[str, Any]:
    ca_path = root / pki.CA_DIR / pki.CA_CERT
    ca: dict[str, Any] | None = None
    ca_key: EllipticCurvePublicKey | None = None
    if ca_path.exists():
        ca_cert = pki.load_ca_certificate(ca_path)
        ca_key = pki.ca_public_key(ca_cert)
        ca = {
            "certificate": str(ca_path),
            "subject": ca_cert.subject.rfc4514_string(),
            "not_after": _iso(ca_cert.not_valid_after_utc),
            "sha256": ca_cert.fingerprint(hashes.SHA256()).hex(),
            "private_key_present": (root / pki.CA_DIR / pki.CA_KEY).exists(),
        }
    revoked = pki.revoked_parties(root)
    now_ms = int(now.timestamp() * 1000)
    parties: list[dict[str, Any]] = []
    for party in pki.list_parties(root):
        directory = pki.party_directory(root, party)
        entry: dict[str, Any] = {
            "kind": party.kind,
            "id": party.id,
            "uri": party.uri(),
            "directory": str(directory),
            "revoked": party.uri() in revoked,
        }
        try:
            cert = pki.load_certificate(directory / pki.TLS_CERT)
            dns, ips = pki.certificate_names(cert)
            entry |= {
                "serial": f"{cert.serial_number:x}",
                "not_after": _iso(cert.not_valid_after_utc),
                "expired": cert.not_valid_after_utc <= now,
                "dns": dns,
                "ip": ips,
            }
        except BrokerError as exc:
            entry["error"] = str(exc)
        if party.kind == "agency":
            entry["statement"] = _describe_statement(directory, party, ca_key, now_ms)
        parties.append(entry)
    return {"dir": str(root), "ca": ca, "revoked": sorted(revoked), "parties": parties}


def _describe_statement(
    directory: Path, party: Party, ca_key: EllipticCurvePublicKey | None, now_ms: int
) -> dict[str, Any]:
    path = directory / pki.STATEMENT
    if not path.exists():
        return {"valid": False, "error": f"no {pki.STATEMENT}"}
    try:
        signed = pki.read_statement(path)
    except BrokerError as exc:
        return {"valid": False, "error": str(exc)}
    info: dict[str, Any] = {"serial": pki.unverified_statement_serial(signed)}
    if ca_key is None:
        return info | {"valid": None, "error": "no CA certificate to verify against"}
    try:
        keys = verify_key_statement(signed, ca_key, now_ms, expected_agency=party.id)
    except IdentityError as exc:
        return info | {"valid": False, "error": str(exc)}
    return info | {
        "valid": True,
        "not_after": _iso_ms(keys.not_after_ms),
        "signing_key": keys.signing_key.hex(),
        "encryption_key": keys.encryption_key.hex(),
        "suites": ["classical", "hybrid"] if keys.supports_hybrid else ["classical"],
    }


def _status(entry: dict[str, Any]) -> str:
    if entry["revoked"]:
        return "REVOKED"
    if "error" in entry:
        return f"error: {entry['error']}"
    if entry["expired"]:
        return "EXPIRED"
    st = entry.get("statement")
    if st is not None and not st["valid"]:
        return f"statement: {st['error']}"
    return "ok"


def _cmd_show(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        raise NotFound(f"no keys directory at {root}: run `broker keys init --dir {root}`")
    info = _describe(root, datetime.now(UTC))
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    ca = info["ca"]
    if ca is None:
        print(f"CA: none in {root / pki.CA_DIR}")
    else:
        key_note = "" if ca["private_key_present"] else ", private key not here"
        print(f"CA: {ca['subject']}, expires {ca['not_after']}{key_note}")
        print(f"    {ca['certificate']}  sha256 {ca['sha256']}")
    if not info["parties"]:
        print("no parties issued yet")
        return 0
    rows = [("URI", "EXPIRES", "STATEMENT", "STATUS")]
    for entry in info["parties"]:
        st = entry.get("statement")
        serial = "-" if st is None else f"serial {st.get('serial', '?')}"
        rows.append((entry["uri"], entry.get("not_after", "?"), serial, _status(entry)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[3]]))
    return 0
