"""`broker console`: the web console for auditors and administrators, on this machine."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from broker.cli import common
from broker.console.config import DEFAULT_LISTEN
from broker.core.policy.labels import LANGUAGES


def register(sub: Any) -> None:
    p = sub.add_parser(
        "console",
        help="a local web console: log health, flows, journeys, policy, registry, queues",
        description=(
            "Serve the console on a loopback address. It talks to the broker over gRPC with "
            "your own certificate and keys (--auditor and/or --admin), so every signature "
            "is made here. Open the login URL it prints; the token is new every run."
        ),
    )
    common.add_target(p)
    common.add_keys(p, "your keys directory")
    p.add_argument("--auditor", metavar="ID", help="audit as urn:broker:auditor:ID")
    p.add_argument("--admin", metavar="ID", help="administer as urn:broker:admin:ID")
    p.add_argument("--broker-id", default="broker", help="whose log key to trust")
    p.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="AGENCY",
        help="trusted witness agency (default: every agency with a statement in --keys-dir)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("data/console"),
        help="where the last verified checkpoint is kept (fork detection across runs)",
    )
    p.add_argument("--listen", default=DEFAULT_LISTEN, help="loopback HOST:PORT (0: any port)")
    p.add_argument(
        "--lang",
        choices=LANGUAGES,
        default="en",
        help="default language of the pages and of the catalogue's labels (?lang= switches)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from broker.console.app import serve
    from broker.console.config import ConsoleConfig

    config = ConsoleConfig(
        keys_dir=args.keys_dir,
        broker=args.broker,
        auditor=args.auditor,
        admin=args.admin,
        broker_id=args.broker_id,
        witnesses=tuple(args.witness),
        state_dir=args.state_dir,
        listen=args.listen,
        lang=args.lang,
    )
    asyncio.run(serve(config, lambda line: print(line, flush=True)))
    return 0
