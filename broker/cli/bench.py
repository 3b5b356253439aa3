"""`broker bench`: benchmarks. `broker bench policy` times the policy engine against cedarpy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from broker.errors import InvalidArgument


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="run benchmarks (default: policy)")
    _policy_args(p)
    p.set_defaults(func=run_policy)
    benches = p.add_subparsers(dest="bench", metavar="BENCH")
    pp = benches.add_parser(
        "policy",
        help="decisions per second: the compiled policy engine and cedarpy, side by side",
        description=(
            "Time the shipped policy bundle over a generated registry and notices drawn from "
            "the catalogue, single-threaded, and the same decisions through cedarpy."
        ),
    )
    _policy_args(pp)
    pp.set_defaults(func=run_policy)
    tp = benches.add_parser(  # transparency log (broker/bench/tlog.py)
        "tlog",
        help="transparency log: append rate, and proof time at 1M leaves",
        description="Append leaves through the store's group commit, then time inclusion and "
        "consistency proofs at the full size.",
    )
    tp.add_argument("--leaves", type=int, default=1_000_000, help="log size (default 1000000)")
    tp.add_argument("--batch", type=int, default=256, help="leaves per group commit (default 256)")
    tp.add_argument("--samples", type=int, default=2000, help="proofs timed per kind")
    tp.add_argument("--dir", type=Path, default=None, help="scratch directory (default: temp)")
    tp.add_argument("--json", action="store_true", help="print the figures as JSON")
    tp.set_defaults(func=run_tlog)
    _register_lookup(benches)  # + lookups (broker/bench/lookup.py)


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agencies", type=int, default=200, help="registry size (default 200)")
    p.add_argument(
        "--seconds", type=float, default=4.0, help="time for the engine modes (default 4)"
    )
    p.add_argument("--notices", type=int, default=500, help="distinct notices (default 500)")
    p.add_argument("--policy-dir", type=Path, default=None, help="bundle (default: policies/)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def run_policy(args: argparse.Namespace) -> int:
    from broker.bench import policy

    if args.agencies < 2:
        raise InvalidArgument("--agencies must be at least 2")
    if args.seconds <= 0 or args.notices < 1:
        raise InvalidArgument("--seconds must be positive and --notices at least 1")
    directory = args.policy_dir or policy.POLICIES
    if not directory.is_dir():
        raise InvalidArgument(f"policy directory {directory} does not exist")
    report = policy.run(args.agencies, args.seconds, args.notices, directory)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.text())
    return 0


def run_tlog(args: argparse.Namespace) -> int:
    import sys

    from broker.bench import tlog

    if args.leaves < 1 or args.batch < 1 or args.samples < 1:
        raise InvalidArgument("--leaves, --batch and --samples must be at least 1")
    report = tlog.run(
        args.leaves, args.batch, args.samples, args.dir, lambda m: print(m, file=sys.stderr)
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0


# -- lookups (broker/bench/lookup.py) ---------------------------------------------------------


def _register_lookup(benches: Any) -> None:
    lp = benches.add_parser(
        "lookup",
        help="lookups end to end (OPRF round trip included) against a 10M-token index",
        description="Pre-fill the broker's index, start `broker serve` and `broker lookup-key "
        "serve`, then time lookups from an agency node: closed-loop throughput, and latency at a "
        "paced rate. Goals (>= 2000/s, p99 <= 20 ms at 500/s) are reported, not asserted.",
    )
    lp.add_argument("--tokens", type=int, default=10_000_000, help="index size (default 10M)")
    lp.add_argument("--seconds", type=float, default=10.0, help="each closed-loop run (10)")
    lp.add_argument("--concurrency", type=int, default=32, help="lookups in flight (32)")
    lp.add_argument("--batch", type=int, default=100, help="tokens a passenger list (100)")
    lp.add_argument("--rate", type=float, default=500.0, help="paced lookups/s (500)")
    lp.add_argument("--paced-seconds", type=float, default=10.0, help="paced run length (10)")
    lp.add_argument("--dir", type=Path, default=None, help="scratch directory (default: temp)")
    lp.add_argument("--json", action="store_true", help="print the figures as JSON")
    lp.set_defaults(func=run_lookup)


def run_lookup(args: argparse.Namespace) -> int:
    import sys

    from broker.bench import lookup

    if args.tokens < 1 or args.concurrency < 1 or args.batch < 1:
        raise InvalidArgument("--tokens, --concurrency and --batch must be at least 1")
    if args.seconds <= 0 or args.rate <= 0 or args.paced_seconds <= 0:
        raise InvalidArgument("--seconds, --rate and --paced-seconds must be positive")
    report = lookup.run(
        args.tokens,
        args.seconds,
        args.concurrency,
        args.batch,
        args.rate,
        args.paced_seconds,
        args.dir,
        lambda m: print(m, file=sys.stderr),
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0
