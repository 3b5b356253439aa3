"""`broker bench`: benchmarks. With no sub-bench, the end-to-end bench beside NATS JetStream
and RabbitMQ (broker/bench/run.py); `broker bench policy` times the policy engine against
cedarpy; `broker bench tlog` the transparency log; `broker bench store` SQLite beside
PostgreSQL replicas; `broker bench crash` crash trials; `broker bench noisy` a
well-behaved agency beside a flooding one; `broker bench wraps` the per-recipient key wrap
four ways (sealed boxes, one ephemeral key per notice, HPKE)."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any

from broker.errors import InvalidArgument


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="run benchmarks (default: end to end, beside NATS JetStream and RabbitMQ)",
        description=(
            "End to end on 127.0.0.1: a throwaway deployment, `broker serve` as its own "
            "process, recipients and a publisher on the real SDK; closed loop, paced rates, "
            "soak, backlog and broker capacity; then the same load through do-it-yourself "
            "pipelines on the local NATS JetStream and RabbitMQ. Prints a table (or --json) "
            "with every figure of ours as a ratio to each peer's. See docs/performance.md."
        ),
    )
    _e2e_args(p)
    p.set_defaults(func=run_e2e)
    # Sub-benches: each adds its parser here (policy, tlog; lookup, crash, noisy to come).
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
    cp.add_argument("--trials", type=int, default=20, help="how many trials")
    cp.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    cp.add_argument("--operations", type=int, default=40, help="operations per trial")
    cp.add_argument("--kills", type=int, default=3, help="SIGKILLs per trial")
    cp.add_argument("--dir", type=Path, default=None, help="keep failing histories here")
    cp.add_argument("--json", action="store_true", help="print the counts as JSON")
    cp.set_defaults(func=run_crash)
    qp = benches.add_parser(  # envelope suites (broker/bench/suites.py)
        "suites",
        help="the classical and the hybrid post-quantum suite side by side: sizes, "
        "seal/check/open times, end-to-end latency and throughput, as ratios",
        description="In one run: envelope sizes and seal, check and open times of both "
        "suites, then a real broker with PQ-keyed agencies publishing alternately with "
        "each suite (docs/post-quantum.md).",
    )
    qp.add_argument("--recipients", type=int, default=10, help="recipients (default 10)")
    qp.add_argument("--rounds", type=int, default=50, help="envelope-layer rounds (default 50)")
    qp.add_argument(
        "--notices", type=int, default=40, help="end-to-end notices per suite (default 40; 0: skip)"
    )
    qp.add_argument("--dir", type=Path, default=None, help="scratch directory (default: temp)")
    qp.add_argument("--json", action="store_true", help="print the figures as JSON")
    qp.set_defaults(func=run_suites)
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

    _register_lookup(benches)  # + lookups (broker/bench/lookup.py)
    _register_attachments(benches)  # + evidence (broker/bench/attachments.py)
    _register_noisy(benches)  # + fair sharing (broker/bench/noisy.py)
    _register_wraps(benches)  # + key wraps (broker/bench/wraps.py)


def _e2e_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--quick", action="store_true", help="small sizes: the whole run in under a minute")
    a("--json", action="store_true", help="print the report as JSON (schema broker-bench/1)")
    a("--plot", type=Path, metavar="FILE.png", help="write the latency plot to FILE.png")
    a("--recipients", type=int, help="recipients per notice (default 10)")
    a("--publishers", type=int, help="publisher processes sharing the load (default 1)")
    a("--recipient-procs", type=int, help="worker processes for the recipients (default 2)")
    a("--concurrency", type=int, help="publishes in flight in the closed loop (default 16)")
    a("--batch", type=int, help="notices per publish call (default 1)")
    a("--window", type=int, help="credit window / prefetch per recipient (default 64)")
    a("--seconds", type=float, dest="closed_seconds", help="closed-loop duration (default 20)")
    a("--rates", help="paced rates in notices/s, comma-separated (default 25,100)")
    a("--paced-seconds", type=float, help="duration of each paced rate (default 20)")
    a("--soak-seconds", type=float, help="soak duration (default 600)")
    a("--soak-rate", type=float, help="soak rate in notices/s (default 25)")
    a("--backlog", type=int, help="deliveries queued for the offline recipient (default 100000)")
    a("--backlog-drain-seconds", type=float, help="measure the drain this long at most (600)")
    a("--capacity-notices", type=int, help="notices sealed ahead for capacity (default 5000)")
    a("--confirm-seconds", type=float, help="RabbitMQ confirmed-publish time (default 10)")
    a(
        "--drain-timeout",
        type=float,
        dest="drain_timeout_s",
        help="give up once no receipt came for this long (s, default 60)",
    )
    a("--modes", help="comma-separated subset of closed,paced,soak,backlog,capacity")
    a("--peers", help="comma-separated subset of nats,rabbitmq, or none (default both)")
    a("--require-peers", action="store_true", help="an unreachable peer is an error, not a skip")
    a("--nats-url", help="NATS server (default nats://127.0.0.1:4222)")
    a("--rabbitmq-url", help="RabbitMQ server (default amqp://guest:guest@127.0.0.1:5672/)")
    a("--dir", type=Path, dest="scratch", help="scratch directory (default: a temp dir)")
    a(
        "--suite",
        choices=("classical", "hybrid"),
        help="our envelope suite (default classical; hybrid: PQ keys for every agency); "
        "`broker bench suites` compares both in one run",
    )


def _e2e_config(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from broker.bench.settings import BenchConfig, quick

    config = quick(BenchConfig()) if args.quick else BenchConfig()
    explicit: dict[str, Any] = {}
    for name in (
        "recipients", "publishers", "recipient_procs", "concurrency", "batch", "window",
        "closed_seconds", "paced_seconds", "soak_seconds", "soak_rate", "backlog",
        "backlog_drain_seconds", "capacity_notices", "confirm_seconds", "drain_timeout_s",
        "nats_url", "rabbitmq_url", "scratch", "suite",
    ):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            explicit[name] = value
    try:
        if args.rates is not None:
            explicit["rates"] = tuple(float(r) for r in args.rates.split(",") if r.strip())
    except ValueError:
        raise InvalidArgument("--rates takes numbers separated by commas, e.g. 25,100") from None
    if args.modes is not None:
        explicit["modes"] = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if args.peers is not None:
        peers = args.peers.strip()
        explicit["peers"] = () if peers == "none" else tuple(p.strip() for p in peers.split(","))
    explicit["require_peers"] = args.require_peers
    return replace(config, **explicit).check()


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_e2e(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from broker.bench import report, run

    config = _e2e_config(args)
    # SIGTERM (and SIGINT, even where a shell made the background job ignore it) end the
    # run through its cleanup: workers, the broker and the scratch directory go too.
    previous = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    called_as_broker = bool(sys.argv) and Path(sys.argv[0]).name in ("broker", "main.py")
    command = "broker " + shlex.join(sys.argv[1:]) if called_as_broker else "broker bench"
    try:
        result = run.run(config, command, run.stderr_progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.plot is not None:
        from broker.bench import plot

        plot.write(result, args.plot)
    print(json.dumps(result, indent=2) if args.json else report.text(result))
    return 0


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


def run_suites(args: argparse.Namespace) -> int:
    import sys

    from broker.bench import suites

    if args.recipients < 1 or args.rounds < 1 or args.notices < 0:
        raise InvalidArgument("--recipients and --rounds must be at least 1, --notices 0 or more")
    report = suites.run(
        args.recipients, args.rounds, args.notices, args.dir, lambda m: print(m, file=sys.stderr)
    )
    print(json.dumps(report, indent=2) if args.json else suites.text(report))
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


# -- attachments (broker/bench/attachments.py) -----------------------------------------------


def _register_attachments(benches: Any) -> None:
    ap = benches.add_parser(
        "attachments",
        help="a sealed attachment end to end with fsync, beside a plain file copy; peak RSS",
        description="Copy a file (read, write, fsync), then move it sealed from one agency to "
        "another through `broker serve`: seal, publish, upload, download, check, open, each "
        "fsynced, with custody links. MB/s of each step and of the whole, and peak RSS.",
    )
    ap.add_argument("--size", type=int, default=1024, help="file size in MiB (default 1024)")
    ap.add_argument("--chunk-kib", type=int, default=1024, help="chunk size in KiB (1024)")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: temp)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.set_defaults(func=run_attachments)


def run_attachments(args: argparse.Namespace) -> int:
    import sys

    from broker.bench import attachments

    if args.size < 1 or not 1 <= args.chunk_kib <= 4096:
        raise InvalidArgument("--size must be at least 1 MiB and --chunk-kib from 1 to 4096")
    report = attachments.run(
        args.size * 1024 * 1024,
        args.chunk_kib * 1024,
        args.dir,
        lambda m: print(m, file=sys.stderr),
    )
    print(attachments.main_json(report) if args.json else report.text())
    return 0


# -- fair sharing (broker/bench/noisy.py) -----------------------------------------------------


def _register_noisy(benches: Any) -> None:
    np_ = benches.add_parser(
        "noisy",
        help="noisy neighbour: a well-behaved agency's publish p50/p99 beside a flooding one",
        description="Three runs on fresh broker processes: FR-NCB publishing at a paced rate "
        "alone, beside DE-BKA flooding Publish without quotas, and beside the same flood under "
        "[quotas]. Prints the p50/p99 of each and the throttled p99 over the quiet one "
        "(goal: at most 2x, reported, not asserted).",
    )
    np_.add_argument("--seconds", type=float, default=10.0, help="each run's length (10)")
    np_.add_argument("--rate", type=float, default=20.0, help="FR-NCB's publishes/s (20)")
    np_.add_argument("--quota", type=int, default=100, help="publishes/s per agency (100)")
    np_.add_argument("--flood-batch", type=int, default=16, help="envelopes per flood call (16)")
    np_.add_argument("--flood-concurrency", type=int, default=8, help="flood calls in flight (8)")
    np_.add_argument("--dir", type=Path, default=None, help="scratch directory (default: temp)")
    np_.add_argument("--json", action="store_true", help="print the figures as JSON")
    np_.set_defaults(func=run_noisy)


def run_noisy(args: argparse.Namespace) -> int:
    import sys

    from broker.bench import noisy

    report = noisy.run(
        args.seconds,
        args.rate,
        args.quota,
        args.flood_batch,
        args.flood_concurrency,
        args.dir,
        lambda m: print(m, file=sys.stderr),
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0


# -- key wraps (broker/bench/wraps.py) --------------------------------------------------------


def _register_wraps(benches: Any) -> None:
    wp = benches.add_parser(
        "wraps",
        help="the per-recipient key wrap four ways, side by side: sealed boxes with a key pair "
        "per recipient or one per notice (ours), HPKE X25519, the hybrid suite's HPKE",
        description="Seal one notice's wraps and open one, for each scheme, interleaved in one "
        "process; CPU medians and ratios to the classical suite's wrap (docs/performance.md).",
    )
    wp.add_argument("--recipients", type=int, default=10, help="recipients per notice (10)")
    wp.add_argument("--rounds", type=int, default=300, help="notices per scheme (300)")
    wp.add_argument("--json", action="store_true", help="print the figures as JSON")
    wp.set_defaults(func=run_wraps)


def run_wraps(args: argparse.Namespace) -> int:
    from broker.bench import wraps

    if not 1 <= args.recipients <= wraps.MAX_RECIPIENTS or not 1 <= args.rounds <= wraps.MAX_ROUNDS:
        raise InvalidArgument(
            f"--recipients must be 1..{wraps.MAX_RECIPIENTS} and --rounds 1..{wraps.MAX_ROUNDS}"
        )
    report = wraps.run(args.recipients, args.rounds)
    print(json.dumps(report, indent=2) if args.json else wraps.text(report))
    return 0
