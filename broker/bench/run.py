"""`broker bench` (end to end): our pipeline and its peers, one after the other, in one
run on this machine, each measured by the same harness (broker.bench.harness).

Order: one Ed25519 verification timed; our pipeline (warm-up, closed loop, each paced
rate, soak, capacity, backlog); NATS JetStream (warm-up, closed loop, each paced
rate); RabbitMQ (the same, then its confirmed publishes with 256 in flight). A peer
whose server does not answer is reported as skipped, with the reason, unless
`require_peers` is set, which makes it an error. Everything runs on 127.0.0.1 and
every load is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.bench import harness, nats_peer, procs, rabbitmq_peer
from broker.bench.harness import Pipeline, measure, wait_ready, warmup
from broker.bench.ours import Ours
from broker.bench.peercrypto import PeerKeys
from broker.bench.report import build
from broker.bench.settings import BenchConfig
from broker.bench.workers import Worker, stop_all
from broker.errors import Unavailable

Progress = Callable[[str], None]


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def load_modes(cfg: BenchConfig, *, soak: bool) -> list[tuple[str, dict[str, Any]]]:
    """(tag, mode) for the closed loop, each paced rate and (for us) the soak."""
    out: list[tuple[str, dict[str, Any]]] = []
    if "closed" in cfg.modes:
        out.append(
            (
                "closed",
                {
                    "kind": "closed",
                    "seconds": cfg.closed_seconds,
                    "concurrency": cfg.concurrency,
                    "batch": cfg.batch,
                },
            )
        )
    if "paced" in cfg.modes:
        for rate in cfg.rates:
            out.append(
                (f"paced-{rate:g}", {"kind": "paced", "rate": rate, "seconds": cfg.paced_seconds})
            )
    if soak and "soak" in cfg.modes:
        out.append(("soak", {"kind": "paced", "rate": cfg.soak_rate, "seconds": cfg.soak_seconds}))
    return out


def _run_modes(
    pipe: Pipeline, cfg: BenchConfig, soak: bool, progress: Progress | None
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    _say(progress, f"{pipe.name}: warm-up")
    results["audience"] = warmup(pipe, cfg.drain_timeout_s)
    for tag, mode in load_modes(cfg, soak=soak):
        _say(progress, f"{pipe.name}: {tag} ({mode['seconds']:g} s)")
        result = measure(pipe, tag, mode, cfg.drain_timeout_s)
        if tag == "soak":
            result["mode"] = "soak"
        else:
            result.pop("rss_mb", None)
        results[tag] = result
    return results


def run_ours(cfg: BenchConfig, scratch: Path, progress: Progress | None) -> dict[str, Any]:
    ours = Ours(cfg, scratch / "ours")
    try:
        _say(progress, "ours: deployment, broker serve, provisioning, workers")
        pipe = ours.start()
        results = _run_modes(pipe, cfg, True, progress)
        if "capacity" in cfg.modes:
            _say(progress, f"ours: capacity ({cfg.capacity_notices} notices sealed ahead)")
            results["capacity"] = ours.capacity()
        if "backlog" in cfg.modes:  # last: a drain cut short leaves deliveries queued
            _say(progress, f"ours: backlog ({cfg.backlog} queued for one offline recipient)")
            results["backlog"] = ours.backlog()
        return results
    finally:
        ours.stop()


def _peer_workers(
    cfg: BenchConfig, prefix: str, spec: dict[str, Any]
) -> tuple[list[Worker], list[Worker]]:
    consumers = [Worker(f"{prefix}.consumers", {**spec, "agencies": c}) for c in cfg.chunks()]
    publishers = [Worker(f"{prefix}.publisher", {**spec, "agency": p}) for p in cfg.publisher_ids()]
    try:
        wait_ready([*publishers, *consumers])
    except Exception:
        stop_all([*publishers, *consumers])
        raise
    return publishers, consumers


def run_nats(cfg: BenchConfig, progress: Progress | None) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:10]
    keys = PeerKeys.generate(cfg.recipient_ids())
    asyncio.run(nats_peer.setup(cfg.nats_url, run_id))
    pipe = None
    try:
        spec = {"url": cfg.nats_url, "run_id": run_id, "keys": keys.as_spec(), "window": cfg.window}
        publishers, consumers = _peer_workers(cfg, "nats", spec)
        server = procs.server_pid("nats-server")
        pipe = Pipeline("nats", publishers, consumers, [server] if server else [], cfg.recipients)
        results = _run_modes(pipe, cfg, False, progress)
        results["server_process"] = "nats-server" if server else None
        return results
    finally:
        if pipe is not None:
            pipe.stop()
        asyncio.run(nats_peer.teardown(cfg.nats_url, run_id))


def run_rabbitmq(cfg: BenchConfig, progress: Progress | None) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:10]
    keys = PeerKeys.generate(cfg.recipient_ids())
    recipients = cfg.recipient_ids()
    asyncio.run(rabbitmq_peer.setup(cfg.rabbitmq_url, run_id, recipients))
    pipe = None
    try:
        spec = {
            "url": cfg.rabbitmq_url,
            "run_id": run_id,
            "keys": keys.as_spec(),
            "window": cfg.window,
        }
        publishers, consumers = _peer_workers(cfg, "rabbitmq", spec)
        server = procs.server_pid("beam.smp")
        pipe = Pipeline(
            "rabbitmq", publishers, consumers, [server] if server else [], cfg.recipients
        )
        results = _run_modes(pipe, cfg, False, progress)
        results["server_process"] = "beam.smp" if server else None
        if "capacity" in cfg.modes:
            _say(progress, f"rabbitmq: confirmed publishes, {cfg.confirm_in_flight} in flight")
            results["confirms"] = pipe.publisher.call(
                "confirm_rate",
                timeout=cfg.confirm_seconds + 120,
                seconds=cfg.confirm_seconds,
                in_flight=cfg.confirm_in_flight,
            )
        return results
    finally:
        if pipe is not None:
            pipe.stop()
        asyncio.run(rabbitmq_peer.teardown(cfg.rabbitmq_url, run_id, recipients))


def _nats_reachable(cfg: BenchConfig) -> str | None:
    return nats_peer.reachable(cfg.nats_url)


def _rabbitmq_reachable(cfg: BenchConfig) -> str | None:
    return rabbitmq_peer.reachable(cfg.rabbitmq_url)


PeerRunner = Callable[[BenchConfig, Progress | None], dict[str, Any]]
PEER_RUNNERS: dict[str, tuple[PeerRunner, Callable[[BenchConfig], str | None]]] = {
    "nats": (run_nats, _nats_reachable),
    "rabbitmq": (run_rabbitmq, _rabbitmq_reachable),
}


def run(cfg: BenchConfig, command: str, progress: Progress | None = None) -> dict[str, Any]:
    """The whole run; returns the report (broker.bench.report's schema)."""
    cfg.check()
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="broker-bench-", dir=cfg.scratch))
    try:
        machine = harness.machine()
        # Which peers can run is decided first: a required peer that is down fails the run
        # before anything is measured.
        skipped: dict[str, str] = {}
        for name in cfg.peers:
            why = PEER_RUNNERS[name][1](cfg)
            if why is not None:
                if cfg.require_peers:
                    raise Unavailable(f"{why}; start it (see .ci/run) or leave it out with --peers")
                _say(progress, f"{name}: skipped: {why}")
                skipped[name] = why
        verify_us = harness.ed25519_verify_us()
        _say(progress, f"one Ed25519 verify: {verify_us:.1f} us of CPU")
        ours = run_ours(cfg, scratch, progress)
        peers: dict[str, Any] = {}
        for name in cfg.peers:
            if name in skipped:
                peers[name] = {"available": False, "reason": skipped[name]}
            else:
                peers[name] = {"available": True, **PEER_RUNNERS[name][0](cfg, progress)}
        return build(cfg, command, machine, verify_us, ours, peers, time.monotonic() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_T0 = time.monotonic()


def stderr_progress(message: str) -> None:
    print(f"bench: {time.monotonic() - _T0:5.1f} s  {message}", file=sys.stderr, flush=True)
