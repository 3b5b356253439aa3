"""Lookups on the command line.

``broker lookup-key serve|counts``: the lookup-key service (its own process).
``broker node lookup``: hit/no-hit for a document, a person, or a file of
selectors; ``broker node publish --selector ...`` indexes a notice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from broker.cli import common
from broker.core.selectors import Selector, canonical_forms, parse_selector
from broker.errors import InvalidArgument

if TYPE_CHECKING:
    from broker.client.lookup import Lookups, SelectorResult
    from broker.client.node import AgencyNode

DEFAULT_SERVICE = "127.0.0.1:7444"
DEFAULT_SERVICE_ID = "oprf"


# -- broker lookup-key ---------------------------------------------------------------------


def register_key_service(sub: Any) -> None:
    lk = sub.add_parser("lookup-key", help="the lookup-key service (OPRF key holder)")
    lsub = lk.add_subparsers(dest="lookup_key_command", required=True, metavar="ACTION")
    serve = lsub.add_parser(
        "serve",
        help="evaluate blinded lookup elements for agencies (mutual TLS, rate-limited)",
        description="Run the lookup-key service until SIGTERM. Issue its credentials first: "
        "`broker keys issue lookup <id>`.",
    )
    serve.add_argument("--id", default=DEFAULT_SERVICE_ID, help="service id (default: oprf)")
    common.add_keys(serve)
    serve.add_argument("--data-dir", type=Path, default=Path("data/lookup"), help="counts")
    serve.add_argument("--listen", default=DEFAULT_SERVICE, help="host:port")
    serve.add_argument("--rate", type=float, default=5000.0, help="elements/s per agency")
    serve.add_argument("--burst", type=float, default=10000.0, help="burst per agency")
    serve.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    serve.set_defaults(func=run_serve)
    counts = lsub.add_parser("counts", help="evaluations per agency and day")
    counts.add_argument("--data-dir", type=Path, default=Path("data/lookup"))
    counts.add_argument("--json", action="store_true")
    counts.set_defaults(func=run_counts)


def run_serve(args: argparse.Namespace) -> int:
    from broker.logs import setup_logging
    from broker.lookupkey import KeyServiceConfig, serve

    setup_logging("INFO", "json")
    config = KeyServiceConfig(
        service_id=args.id,
        keys_dir=args.keys_dir,
        data_dir=args.data_dir,
        listen=args.listen,
        rate=args.rate,
        burst=args.burst,
    )
    return asyncio.run(serve(config, args.port_file))


def run_counts(args: argparse.Namespace) -> int:
    from broker.lookupkey import Counts

    path = Path(args.data_dir) / "lookup-counts.sqlite3"
    if not path.exists():
        raise InvalidArgument(f"no counts in {args.data_dir}: is it the service's --data-dir?")
    counts = Counts(path)
    try:
        rows = counts.all()
    finally:
        counts.close()
    out = [
        {
            "agency": agency,
            "day": datetime.fromtimestamp(day * 86_400, UTC).date().isoformat(),
            "batches": batches,
            "elements": elements,
        }
        for agency, day, batches, elements in rows
    ]
    if args.json:
        print(json.dumps(out))
    else:
        for r in out:
            line = f"{r['day']}  {r['agency']:<12} {r['elements']:>9} elements"
            print(f"{line} {r['batches']:>7} batches")
    return 0


# -- broker node lookup / publish --selector ---------------------------------------------------


def add_service_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lookup-service", default=DEFAULT_SERVICE, help="lookup-key service host:port")
    p.add_argument("--lookup-id", default=DEFAULT_SERVICE_ID, help="its id (urn:broker:lookup:ID)")
    p.add_argument(
        "--lookup-holder", action="append", default=[], metavar="HOST:PORT=ID",
        help="a holder of a threshold key (repeat for each; replaces --lookup-service)",
    )  # fmt: skip


def add_selector_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--selector",
        action="append",
        default=[],
        metavar="TYPE=FIELD;...",
        help="index the notice by this selector, e.g. travel_document=FR;P;19FR23456 or "
        "'person=DUPONT, Jean;1981-03-14' (repeatable; types: see policies/README.md)",
    )
    add_service_flags(p)


def register_node_lookup(nsub: Any, common: Any) -> None:
    p = nsub.add_parser(
        "lookup",
        help="hit or no-hit for documents, persons or a file of selectors (never revealed)",
        description="Each selector is reduced to canonical forms, blinded and evaluated by the "
        "lookup-key service; the broker sees tokens only. On a hit the notice's originator "
        "gets a sealed hit notification it must answer by the kind's deadline.",
    )
    common(p)
    p.add_argument("--purpose", required=True, help="why you search, e.g. border_control")
    p.add_argument(
        "--document", action="append", default=[], metavar="COUNTRY:TYPE:NUMBER",
        help="a travel document, e.g. FR:P:19FR23456",
    )  # fmt: skip
    p.add_argument(
        "--person", action="append", default=[], metavar="NAME;DATE_OF_BIRTH",
        help="a person, e.g. 'DUPONT, Jean;14.03.1981'",
    )  # fmt: skip
    p.add_argument(
        "--selector", action="append", default=[], metavar="TYPE=FIELD;...",
        help="any selector, e.g. vin=WVWZZZ1JZXW000001 or plate=DE;B-KA 1234",
    )  # fmt: skip
    p.add_argument("--file", type=Path, help="one selector a line (TYPE=FIELD;...), # comments")
    p.epilog = "Results come in this order: documents, persons, selectors, the file's lines."
    p.add_argument("--note", default="", help="free text for the originator on a hit")
    p.add_argument("--no-notify", action="store_true", help="do not send hit notifications")
    add_service_flags(p)
    p.set_defaults(func=run_lookup)


def selectors_of(args: argparse.Namespace) -> list[Selector]:
    """Every selector the flags and the file name, in order; errors say which one."""
    texts: list[tuple[str, str]] = []
    for d in args.document:
        country, _, rest = d.partition(":")
        doc_type, _, number = rest.partition(":")
        texts.append((f"--document {d}", f"travel_document={country};{doc_type};{number}"))
    texts += [(f"--person {p}", f"person={p}") for p in args.person]
    texts += [(f"--selector {s}", s) for s in args.selector]
    if args.file is not None:
        try:
            lines = args.file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InvalidArgument(f"--file: cannot read {args.file} ({exc.strerror})") from None
        for n, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                texts.append((f"{args.file}:{n}", line.strip()))
    out = []
    for where, text in texts:
        try:
            s = parse_selector(text)
            canonical_forms(s)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}: {exc}") from None
        out.append(s)
    if not out:
        raise InvalidArgument("give at least one --document, --person, --selector or --file")
    return out


def lookups_for(args: argparse.Namespace, node: AgencyNode) -> Lookups:
    from broker.client.lookup import LookupKeyClient, Lookups, ThresholdKeyClient, TokenSource

    keys: TokenSource
    if args.lookup_holder:
        holders = []
        for h in args.lookup_holder:
            address, sep, sid = h.rpartition("=")
            if not sep or not address or not sid:
                raise InvalidArgument(f"--lookup-holder {h!r}: write HOST:PORT=ID")
            holders.append((address, sid))
        keys = ThresholdKeyClient(args.keys_dir, args.agency, holders)
    else:
        keys = LookupKeyClient(args.keys_dir, args.agency, args.lookup_service, args.lookup_id)
    return Lookups(node, keys)


async def publish_tokens(args: argparse.Namespace, node: AgencyNode) -> list[bytes]:
    """The index tokens of ``node publish --selector ...`` (none without selectors)."""
    if not args.selector:
        return []
    selectors = []
    for text in args.selector:
        try:
            selectors.append(parse_selector(text))
        except InvalidArgument as exc:
            raise InvalidArgument(f"--selector {text}: {exc}") from None
    lookups = lookups_for(args, node)
    try:
        return await lookups.index_tokens(args.kind, selectors)
    finally:
        await lookups.keys.close()


def _line(r: SelectorResult) -> list[str]:
    label = f"{r.selector.type:<16} {r.forms[0].split(':', 1)[1]}"
    if not r.hit:
        return [f"no hit  {label}"]
    out = [f"HIT     {label}"]
    for h in r.hits:
        what = f" {h.kind}" if h.kind else ""
        out.append(f"          notice {h.notice_id}{what} by {h.originator} (release: {h.release})")
        if h.action:
            out.append(f"          action: {h.action}")
        if h.held_version:
            out.append(f"          you hold version {h.held_version}: open it in your inbox")
        if h.notice_id in r.notified:
            hours = h.respond_within_ms // 3_600_000
            out.append(f"          {h.originator} notified (sealed), answers within {hours} h")
        else:
            out.append(f"          contact {h.originator}, quoting notice {h.notice_id}")
    return out


def run_lookup(args: argparse.Namespace) -> int:
    from broker.cli.nodeargs import _node

    selectors = selectors_of(args)

    async def go() -> int:
        async with _node(args) as node:
            lookups = lookups_for(args, node)
            try:
                results = await lookups.lookup(
                    selectors, args.purpose, note=args.note, notify=not args.no_notify
                )
            except grpc.aio.AioRpcError as exc:
                print(f"broker: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
            finally:
                await lookups.keys.close()
        if args.json:
            print(json.dumps([r.to_json() for r in results]))
        else:
            for r in results:
                print("\n".join(_line(r)))
            hits = sum(r.hit for r in results)
            print(f"{len(results)} selector(s), {hits} hit(s)")
        return 0

    return asyncio.run(go())
