"""`broker node case`: register the subjects of a case for deconfliction (as lookup
tokens only; broker/client/deconfliction.py) and print the other agencies' cases on the
same subjects, whose originators are told (sealed)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

import grpc

from broker.cli import lookup


def register_node_case(
    nsub: Any, common: Callable[[argparse.ArgumentParser], None], node: Callable[..., Any]
) -> None:
    p = nsub.add_parser(
        "case",
        help="register a case's subjects for deconfliction (lookup tokens, never in clear)",
    )
    common(p)
    p.add_argument("--facts", required=True, help="the case's reference and contact (sealed)")
    p.add_argument(
        "--document", action="append", default=[], metavar="COUNTRY:TYPE:NUMBER",
        help="a travel document of a subject",
    )  # fmt: skip
    p.add_argument(
        "--person", action="append", default=[], metavar="NAME;DATE_OF_BIRTH", help="a person"
    )
    p.add_argument(
        "--selector", action="append", default=[], metavar="TYPE=FIELD;...",
        help="any selector, e.g. plate=FR;AB-123-CD",
    )  # fmt: skip
    p.add_argument("--file", default=None, help="one selector a line")
    p.add_argument("--note", default="", help="free text for the other cases' originators")
    lookup.add_service_flags(p)
    p.set_defaults(func=run_case, make_node=node)


def run_case(args: argparse.Namespace) -> int:
    from pathlib import Path

    from broker.client.deconfliction import register_case

    if args.file is not None:
        args.file = Path(args.file)
    subjects = lookup.selectors_of(args)

    async def go() -> int:
        async with args.make_node(args) as node:
            lookups = lookup.lookups_for(args, node)
            try:
                done = await register_case(lookups, subjects, args.facts.encode(), note=args.note)
            except grpc.aio.AioRpcError as exc:
                print(f"broker: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
            finally:
                await lookups.keys.close()
        matches = [{"originator": m.originator, "case": m.notice_id} for m in done.matches]
        if args.json:
            print(json.dumps({"case": done.notice.notice_id, "matches": matches}))
            return 0
        print(f"registered case {done.notice.notice_id}")
        for m in matches:
            print(f"  {m['originator']} works on the same subject (case {m['case']}): told")
        if not matches:
            print("  no other case on these subjects")
        return 0

    return asyncio.run(go())
