"""Entry point of the `broker` command: one parser, one error boundary."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from broker.errors import BrokerError

# gRPC's C core writes its own lines to stderr (handshake failures, retries); the CLI
# names causes itself (broker/cli/preflight.py). Set GRPC_VERBOSITY to see them again.
# Before grpc is first imported: the core reads it once.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def version() -> str:
    """This installation's version, e.g. 0.1.0."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("sealed-notice-broker")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0.1.0+source"


def build_parser() -> argparse.ArgumentParser:
    from broker.cli import (
        admin,
        audit,
        backup,
        bench,
        common,
        console,
        demo,
        keys,
        lookup,
        node,
        serve,
        status,
        store,
    )

    parser = argparse.ArgumentParser(
        prog="broker",
        description="Sealed notice broker: signed, end-to-end encrypted notices between agencies.",
    )
    parser.add_argument("--version", action="version", version=f"broker {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status.register(sub)
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
    common.show_defaults(parser)  # every --help shows its defaults
    return parser


def one_line(text: str) -> str:
    """The message on one line: an error is one line of the terminal, whatever it quotes."""
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import grpc  # imported by build_parser already, after GRPC_VERBOSITY was set

    try:
        result: int = args.func(args)
    except grpc.aio.AioRpcError as exc:  # a broker's answer no command caught: one line
        print(f"broker: {exc.code().name}: {one_line(exc.details() or '')}", file=sys.stderr)
        return 1
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
