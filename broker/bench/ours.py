"""Our pipeline, end to end: a throwaway deployment, `broker serve` as its own process,
recipients and a publisher on the real SDK, and the modes only we run (backlog,
capacity).

The deployment (broker.sandbox) has the publisher and the recipients as agencies. The
broker is provisioned as an administrator would do it: the shipped policy activated
with a signature, the registry signed, so that every publish is checked against the
signed policy and registry by the node and again by the broker. Durability is the
store's default (SQLite WAL, synchronous=FULL: fsync per group commit); the
transparency log records every publish, decision and receipt.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from broker.bench import procs
from broker.bench.harness import Pipeline, RssSampler, await_receipts, await_reply, wait_ready
from broker.bench.settings import BenchConfig
from broker.bench.stats import per
from broker.bench.walcount import since, write_transactions
from broker.bench.workers import Worker
from broker.bench.workload import now
from broker.client.node import state_file
from broker.errors import Unavailable
from broker.sandbox import create_deployment, provision


class Ours:
    """Starts and stops our pipeline; `pipe` is what the harness measures."""

    def __init__(self, config: BenchConfig, scratch: Path) -> None:
        self.config = config
        self.scratch = scratch
        self.broker: procs.BrokerProcess | None = None
        self.pipe: Pipeline | None = None
        self.spec: dict[str, Any] = {}

    def start(self) -> Pipeline:
        cfg = self.config
        deployment = create_deployment(
            self.scratch / "deployment", cfg.agencies(), pq=cfg.suite == "hybrid"
        )
        self.broker = procs.BrokerProcess(deployment.config_file, self.scratch / "broker.log")
        target = f"127.0.0.1:{self.broker.start()}"
        nodes = self.scratch / "nodes"
        self.spec = {
            "broker": target,
            "keys_dir": str(deployment.keys_dir),
            "state_dir": str(nodes),
            "window": cfg.window,
            "suite": cfg.suite,
        }
        consumers = [
            Worker("ours.recipients", {**self.spec, "agencies": chunk}) for chunk in cfg.chunks()
        ]
        publishers = [
            Worker("ours.publisher", {**self.spec, "agency": p, "recipients": cfg.recipient_ids()})
            for p in cfg.publisher_ids()
        ]
        self.pipe = Pipeline(
            "ours",
            publishers,
            consumers,
            [self.broker.pid],
            cfg.recipients,
            self.broker.pid,
            extra={"state_files": [state_file(nodes, a) for a in cfg.recipient_ids()]},
        )
        # Provision while the workers start (the publisher waits for the warm-up command).
        asyncio.run(provision(deployment, target))
        wait_ready([*publishers, *consumers])
        return self.pipe

    def stop(self) -> None:
        if self.pipe is not None:
            self.pipe.stop()
        if self.broker is not None:
            self.broker.stop()

    # -- backlog --------------------------------------------------------------------
    def backlog(self) -> dict[str, Any]:
        """One recipient offline while `backlog` deliveries queue up for it (notices sealed
        for it alone, published in batches); then it comes back and drains them through
        the SDK, for at most `backlog_drain_seconds` (what is left then stays queued: the
        backlog runs last). Reports the fill and drain rates and the broker's RSS."""
        assert self.pipe is not None and self.broker is not None
        cfg, pipe = self.config, self.pipe
        agency = cfg.chunks()[0][0]
        owner = pipe.consumers[0]
        owner.call("offline", agency=agency)
        sampler = RssSampler(self.broker.pid, 1.0)
        fill_meter = procs.Meter({"server": [self.broker.pid], "publisher": [pipe.publisher.pid]})
        fill_meter.start()
        pipe.publisher.send(
            "fill",
            tag="backlog",
            count=cfg.backlog,
            recipients=[agency],
            batch=cfg.capacity_batch,
            concurrency=cfg.capacity_concurrency,
        )
        fill = await_reply(pipe.publisher, cfg.backlog / 5 + 300, sampler.tick)
        fill_usage = fill_meter.stop()
        queued_rss = procs.rss_mb(self.broker.pid)
        queued = int(fill["published"])
        drain_meter = procs.Meter({"server": [self.broker.pid], "recipients": [owner.pid]})
        drain_meter.start()
        _, base = pipe.counts()
        inbox = state_file(Path(self.spec["state_dir"]), agency)
        commits_before = write_transactions(inbox)
        online_at = now()
        owner.call("online", agency=agency)
        complete = await_receipts(
            pipe, base, queued, cfg.drain_timeout_s, sampler.tick, cfg.backlog_drain_seconds
        )
        drain_usage = drain_meter.stop()
        commits = since(commits_before, write_transactions(inbox))
        samples = owner.call("collect", tag="backlog")
        drained = len(samples["receipted"])
        drain_s = (samples["last"] - online_at) if samples["last"] else None
        fill_s = fill["ended"] - fill["started"]
        return {
            "mode": "backlog",
            "offline_recipient": agency,
            "queued": queued,
            "errors": int(fill["errors"]),
            "first_error": fill["first_error"],
            "fill_s": round(fill_s, 3),
            "fill_notices_per_s": round(queued / fill_s, 2) if fill_s > 0 else None,
            "broker_rss_queued_mb": round(queued_rss, 1),
            "broker_peak_rss_mb": round(
                max(fill_usage["server"].peak_rss_mb, drain_usage["server"].peak_rss_mb), 1
            ),
            "drained": drained,
            "complete": complete and drained == queued,
            "drain_s": round(drain_s, 3) if drain_s else None,
            "drain_deliveries_per_s": round(drained / drain_s, 2) if drain_s else None,
            "broker_cpu_ms_per_queued": round(fill_usage["server"].cpu_s * 1000 / queued, 4)
            if queued
            else None,
            "recipient_cpu_ms_per_delivery": round(
                drain_usage["recipients"].cpu_s * 1000 / drained, 4
            )
            if drained
            else None,
            "recipient_commits_per_delivery": per(commits, drained, scale=1.0),
            "rss_mb": [[round(t, 2), round(v, 2)] for t, v in sampler.points],
        }

    # -- capacity -------------------------------------------------------------------
    def capacity(self) -> dict[str, Any]:
        """Receipt-only recipients (broker.bench.capacity) and envelopes sealed ahead:
        deliveries per second the broker sustains. The recipient workers stop their SDK
        listeners for it and start them again after."""
        assert self.pipe is not None and self.broker is not None
        cfg, pipe = self.config, self.pipe
        for c in pipe.consumers:
            c.call("raw")
        sealed = pipe.publisher.call(
            "seal", timeout=cfg.capacity_notices / 10 + 120, tag="capacity",
            count=cfg.capacity_notices,
        )  # fmt: skip
        meter = procs.Meter(pipe.groups())
        meter.start()
        _, base = pipe.counts()
        pipe.publisher.send(
            "publish_sealed", batch=cfg.capacity_batch, concurrency=cfg.capacity_concurrency
        )
        driven = await_reply(pipe.publisher, cfg.capacity_notices / 10 + 300, lambda: None)
        expected = int(driven["published"]) * cfg.recipients
        complete = await_receipts(pipe, base, expected, cfg.drain_timeout_s, lambda: None)
        usage = meter.stop()
        collected = [c.call("collect_raw") for c in pipe.consumers]
        for c in pipe.consumers:
            c.call("sdk")
        lasts = [c["last"] for c in collected if c["last"] is not None]
        receipted = sum(int(c["receipted"]) for c in collected)
        if not lasts:
            raise Unavailable("capacity: no receipt was acknowledged")
        elapsed = max(lasts) - driven["started"]
        return {
            "mode": "capacity",
            "notices": int(driven["published"]),
            "sealed_ahead": int(sealed),
            "errors": int(driven["errors"]),
            "first_error": driven["first_error"],
            "expected_deliveries": expected,
            "deliveries": receipted,
            "complete": complete and receipted == expected,
            "elapsed_s": round(elapsed, 4),
            "deliveries_per_s": round(receipted / elapsed, 2),
            "notices_per_s": round(receipted / cfg.recipients / elapsed, 2),
            "broker_cpu_ms_per_delivery": round(usage["server"].cpu_s * 1000 / receipted, 4)
            if receipted
            else None,
            "cpu_s": {g: round(u.cpu_s, 4) for g, u in usage.items()},
            "peak_rss_mb": {g: round(u.peak_rss_mb, 1) for g, u in usage.items()},
        }
