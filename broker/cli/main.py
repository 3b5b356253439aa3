"""Entry point of the `broker` command: one parser, one error boundary."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from broker.errors import BrokerError


def build_parser() -> argparse.ArgumentParser:
    from broker.cli import admin, audit, bench, demo, keys, lookup, node, serve

    parser = argparse.ArgumentParser(
        prog="broker",
        description="Sealed notice broker: signed, end-to-end encrypted notices between agencies.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(sub)
    keys.register(sub)
    node.register(sub)
    admin.register(sub)
    audit.register(sub)  # transparency log
    demo.register(sub)
    bench.register(sub)
    lookup.register_key_service(sub)  # + lookups: `broker lookup-key ...`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except BrokerError as exc:
        print(f"broker: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
