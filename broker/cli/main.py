"""Entry point of the `broker` command: one parser, one error boundary."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from broker.errors import BrokerError


def build_parser() -> argparse.ArgumentParser:
    from broker.cli import (
        admin,
        audit,
        backup,
        bench,
        console,
        demo,
        keys,
        lookup,
        node,
        serve,
        store,
    )

    parser = argparse.ArgumentParser(
        prog="broker",
        description="Sealed notice broker: signed, end-to-end encrypted notices between agencies.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(sub)
    store.register(sub)
    backup.register(sub)  # `broker backup` and `broker restore`
    keys.register(sub)
    node.register(sub)
    admin.register(sub)
    audit.register(sub)  # transparency log
    console.register(sub)  # the web console
    demo.register(sub)
    bench.register(sub)
    lookup.register_key_service(sub)  # + lookups: `broker lookup-key ...`
    return parser


def one_line(text: str) -> str:
    """The message on one line: an error is one line of the terminal, whatever it quotes."""
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except BrokerError as exc:
        print(f"broker: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine said no (a file, a socket): one line, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"broker: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
