"""`broker demo`: a broker and four agencies exchanging sealed notices on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the four-agency demonstration and exit 0 on success")
    p.add_argument("--dir", type=Path, help="keep the deployment here (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="also print a JSON summary")
    p.add_argument(
        "--suite",
        choices=("classical", "hybrid"),
        default="classical",
        help="envelope suite every node seals with (hybrid: post-quantum keys for every "
        "agency; docs/post-quantum.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from broker.demo import main

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    return main(args.dir, as_json=args.json, suite=args.suite)
