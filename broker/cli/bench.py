"""`broker bench`: benchmarks. `broker bench policy` times the policy engine against cedarpy;
`broker bench tlog` the transparency log; `broker bench store` SQLite beside PostgreSQL replicas."""

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
    cp = benches.add_parser(  # crash trials (broker/bench/crash.py)
        "crash",
        help="crash trials: SIGKILL a broker under load, count what the history checker finds",
        description="Run crash trials (docs/crash-safety.md) and count lost, duplicated, "
        "unauthorised and inconsistent findings; exits 1 if there are any.",
    )
    cp.add_argument("--trials", type=int, default=20, help="how many trials (default 20)")
    cp.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    cp.add_argument("--operations", type=int, default=40, help="operations per trial")
    cp.add_argument("--kills", type=int, default=3, help="SIGKILLs per trial (default 3)")
    cp.add_argument("--dir", type=Path, default=None, help="keep failing histories here")
    cp.add_argument("--json", action="store_true", help="print the counts as JSON")
    cp.set_defaults(func=run_crash)
    sp = benches.add_parser(  # stores and replicas (broker/bench/store.py)
        "store",
        help="the broker end to end on SQLite, one and two PostgreSQL replicas, as ratios",
        description="Run real broker processes on SQLite, then on one and on two PostgreSQL "
        "replicas sharing a schema (created and dropped in the database --store names), "
        "publish pre-sealed notices and time publishes and receipted deliveries.",
    )
    sp.add_argument(
        "--store",
        help="postgresql:// URL of a database to bench in (a schema "
        "of its own is created and dropped); without it, SQLite only",
    )
    sp.add_argument("--notices", type=int, default=400, help="notices per setup (default 400)")
    sp.add_argument("--publishers", type=int, default=8, help="concurrent publishers (default 8)")
    sp.add_argument("--dir", type=Path, default=None, help="scratch directory (default: temp)")
    sp.add_argument("--json", action="store_true", help="print the figures as JSON")
    sp.set_defaults(func=run_store)


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


def run_store(args: argparse.Namespace) -> int:
    import sys

    from broker.bench import store

    report = store.run(
        args.store, args.notices, args.publishers, args.dir, lambda m: print(m, file=sys.stderr)
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
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


def run_crash(args: argparse.Namespace) -> int:
    import sys

    from broker.bench import crash
    from broker.faults.trial import environment_seed

    if args.trials < 1 or args.kills < 0 or args.operations < args.kills + 4:
        raise InvalidArgument("--trials must be at least 1, --operations at least --kills + 4")
    seed = args.seed if args.seed is not None else environment_seed()
    report = crash.run(
        args.trials,
        seed,
        args.operations,
        args.kills,
        args.dir,
        lambda m: print(m, file=sys.stderr),
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 1 if report.failed else 0
