"""What the `broker node ...` commands share: the connection flags, the node itself
(built once its connection is checked, broker/cli/preflight.py), section contents from
flags, waiting for a broker, and times as the terminal shows them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from broker.cli import common, preflight
from broker.core.identity import Party
from broker.errors import InvalidArgument


def _common(p: argparse.ArgumentParser) -> None:
    common.add_agency(p)
    common.add_target(p)
    common.add_keys(p)
    p.add_argument("--state-dir", type=Path, default=Path("data/nodes"), help="node inbox")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _section_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--section",
        action="append",
        default=[],
        metavar="NAME=TEXT|NAME=@FILE",
        help="a section's content (repeat per section)",
    )
    p.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="one field of a section, e.g. identity.family_name=DOE: the section's content is "
        "then one 'field: value' line per field (the catalogue's content_fields; repeat)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _node(args: argparse.Namespace, *, checked: bool = False, check_content: bool = True) -> Any:
    """The agency node, once the connection is checked (broker/cli/preflight.py): a
    broker that is not there, or a certificate that cannot work, is named in ~2 s."""
    from broker.client.node import AgencyNode, NodeConfig

    if not checked:
        preflight.check_connection(args.keys_dir, Party("agency", args.agency), args.broker)
    return AgencyNode(
        NodeConfig(
            agency_id=args.agency,
            broker=args.broker,
            keys_dir=args.keys_dir,
            state_dir=args.state_dir,
            check_content=check_content,
        )
    )


def _sections(specs: list[str], fields: Sequence[str] = ()) -> dict[str, bytes]:
    """--section NAME=TEXT|@FILE and --field SECTION.FIELD=VALUE as section contents."""
    out: dict[str, bytes] = {}
    for spec in fields:
        key, sep, value = spec.partition("=")
        section, dot, field = key.partition(".")
        if not sep or not dot or not section or not field or "\n" in value:
            raise InvalidArgument(f"--field {spec!r}: write SECTION.FIELD=VALUE on one line")
        out[section] = out.get(section, b"") + f"{field}: {value}\n".encode()
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise InvalidArgument(f"--section {spec!r}: write NAME=TEXT or NAME=@FILE")
        if name in out:
            raise InvalidArgument(f"section {name} is given twice (--section and --field)")
        if value.startswith("@"):
            try:
                out[name] = Path(value[1:]).read_bytes()
            except OSError as exc:
                raise InvalidArgument(f"--section {name}: cannot read {value[1:]}") from exc
        else:
            out[name] = value.encode()
    if not out:
        raise InvalidArgument("give at least one --section NAME=TEXT or --field SECTION.FIELD=V")
    return out


def _rpc_error(exc: grpc.aio.AioRpcError) -> int:
    print(f"broker: {exc.code().name}: {exc.details()}", file=sys.stderr)
    return 1


async def _wait_for_broker(args: argparse.Namespace, stop: asyncio.Event) -> bool:
    """Until the broker answers: say once, on stderr, that the node waits for it and why,
    then check again every second. A certificate that cannot work is raised at once.
    Returns False when `stop` was set first."""
    party = Party("agency", args.agency)
    said = ""
    while not stop.is_set():
        try:
            await asyncio.to_thread(
                preflight.check_connection, args.keys_dir, party, args.broker, deadline_s=1.0
            )
        except preflight.BrokerUnreachable as exc:
            if str(exc) != said:
                print(f"broker: waiting for a broker at {args.broker}: {exc}", file=sys.stderr)
                said = str(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            continue
        if said:
            print(f"broker: connected to {args.broker}", file=sys.stderr, flush=True)
        return True
    return False


HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(ms: int) -> str:
    """Times on the terminal: ISO 8601, UTC (as in every --json beside its _ms number)."""
    return _iso(ms)
