"""The measuring harness, the same for our pipeline and the peers.

A pipeline is one or more publisher workers, one or more recipient workers and the
server process(es). One mode is measured as: reset the peak RSS of every process and read its
CPU seconds, tell the publisher to run the load, wait until every delivery of every
published notice has been receipted (or a drain timeout passes), read CPU and peak
RSS again, and collect the recipients' latency samples. Throughput is counted from the
publisher's first send to the last confirmed receipt, so a backlog built during the
load is paid for before the figure is taken.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.bench import procs
from broker.bench.stats import latency_ms, per
from broker.bench.walcount import since, write_transactions
from broker.bench.workers import Worker, stop_all
from broker.bench.workload import now
from broker.errors import FailedPrecondition, Unavailable


@dataclass
class Pipeline:
    name: str  # "ours", "nats", "rabbitmq"
    publishers: list[Worker]
    consumers: list[Worker]
    server_pids: list[int]
    recipients: int  # recipients per notice
    rss_pid: int | None = None  # the server process whose RSS a soak samples
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def publisher(self) -> Worker:
        """The first publisher (the one that seals ahead, fills backlogs, ...)."""
        return self.publishers[0]

    def groups(self) -> dict[str, list[int]]:
        return {
            "server": self.server_pids,
            "publisher": [p.pid for p in self.publishers],
            "recipients": [c.pid for c in self.consumers],
        }

    def counts(self) -> tuple[int, int]:
        """(deliveries handed over, receipts confirmed) so far, over all recipient workers."""
        pairs = [c.counters() for c in self.consumers]
        return sum(p[0] for p in pairs), sum(p[1] for p in pairs)

    def commits(self) -> int | None:
        """Fsync'd commits of the recipients' state databases so far, where the pipeline
        keeps them (ours: each node's inbox, extra["state_files"]); None for the peers,
        whose consumers keep nothing. Read here, in the harness, which holds no connection
        to those databases (see broker/bench/walcount.py)."""
        files = self.extra.get("state_files")
        if files is None:
            return None
        return sum(write_transactions(Path(f)) for f in files)

    def stop(self) -> None:
        stop_all([*self.publishers, *self.consumers])


def wait_ready(workers: list[Worker], timeout: float = 90.0) -> None:
    for w in workers:
        w.result(timeout)


class RssSampler:
    """Resident memory of one process every `every` seconds, while the harness waits."""

    def __init__(self, pid: int | None, every: float) -> None:
        self.pid, self.every = pid, every
        self.points: list[tuple[float, float]] = []
        self._t0 = now()
        self._next = self._t0

    def tick(self) -> None:
        t = now()
        if self.pid is not None and t >= self._next:
            self.points.append((t - self._t0, procs.rss_mb(self.pid)))
            self._next = t + self.every


def await_reply(worker: Worker, timeout: float, tick: Callable[[], None]) -> Any:
    deadline = now() + timeout
    while True:
        ok, value = worker.poll(0.05)
        tick()
        if ok:
            return value
        if now() > deadline:
            raise Unavailable(f"{worker.role} did not finish in {timeout:.0f} s")


def await_receipts(
    pipe: Pipeline,
    base: int,
    expected: int,
    stall: float,
    tick: Callable[[], None],
    limit: float | None = None,
) -> bool:
    """Wait until `expected` more receipts are confirmed, however long that takes while
    they keep coming (at most `limit` seconds if given); False once `stall` seconds pass
    without a new one, or at the limit."""
    started = now()
    seen, last_progress = pipe.counts()[1], started
    while seen - base < expected:
        if now() - last_progress > stall or (limit is not None and now() - started > limit):
            return False
        time.sleep(0.02)
        tick()
        count = pipe.counts()[1]
        if count != seen:
            seen, last_progress = count, now()
    return True


def warmup(pipe: Pipeline, timeout: float) -> dict[str, list[str]]:
    """One notice end to end from each publisher (connections, caches, the audience
    check); returns who got which sections."""
    audience: dict[str, list[str]] = {}
    for publisher in pipe.publishers:
        base = pipe.counts()[1]
        audience = publisher.call("warmup", timeout=timeout, tag="warmup")
        if len(audience) != pipe.recipients:
            raise FailedPrecondition(
                f"{pipe.name}: the warm-up notice reached {len(audience)} recipients, not "
                f"{pipe.recipients}"
            )
        if not await_receipts(pipe, base, pipe.recipients, timeout, lambda: None):
            raise Unavailable(
                f"{pipe.name}: the warm-up notice was not receipted in {timeout:.0f} s"
            )
    for c in pipe.consumers:
        c.call("collect", tag="warmup")
    return audience


def _merge(collected: list[dict[str, Any]]) -> dict[str, Any]:
    lasts = [c["last"] for c in collected if c.get("last") is not None]
    firsts = [c["first"] for c in collected if c.get("first") is not None]
    return {
        "delivered": [x for c in collected for x in c.get("delivered", [])],
        "receipted": [x for c in collected for x in c.get("receipted", [])],
        "first": min(firsts) if firsts else None,
        "last": max(lasts) if lasts else None,
    }


def figures(
    pipe: Pipeline,
    mode: dict[str, Any],
    driven: dict[str, Any],
    usage: dict[str, procs.Usage],
    samples: dict[str, Any],
    complete: bool,
) -> dict[str, Any]:
    """One mode's figures (the JSON schema's ModeResult)."""
    published = int(driven["published"])
    deliveries = len(samples["receipted"])
    elapsed = (samples["last"] - driven["started"]) if samples["last"] is not None else None
    cpu = {g: round(u.cpu_s, 4) for g, u in usage.items()}
    for g in ("server", "publisher", "recipients"):
        cpu.setdefault(g, None)  # type: ignore[arg-type]
    return {
        "mode": mode["kind"],
        "rate": mode.get("rate"),
        "seconds": mode["seconds"],
        "concurrency": mode.get("concurrency"),
        "notices": published,
        "errors": int(driven["errors"]),
        "first_error": driven["first_error"],
        "late": int(driven.get("late", 0)),
        "expected_deliveries": published * pipe.recipients,
        "delivered": len(samples["delivered"]),
        "deliveries": deliveries,
        "complete": complete and deliveries == published * pipe.recipients,
        "elapsed_s": round(elapsed, 4) if elapsed else None,
        "notices_per_s": round(deliveries / pipe.recipients / elapsed, 2) if elapsed else None,
        "deliveries_per_s": round(deliveries / elapsed, 2) if elapsed else None,
        "latency_ms": {
            "delivered": latency_ms(samples["delivered"]),
            "receipted": latency_ms(samples["receipted"]),
        },
        "cpu_s": cpu,
        "cpu_ms_per_notice": {
            g: (per(v, published) if v is not None else None) for g, v in cpu.items()
        },
        "recipient_cpu_ms_per_delivery": (
            per(cpu["recipients"], deliveries) if cpu["recipients"] is not None else None
        ),
        "peak_rss_mb": {g: round(u.peak_rss_mb, 1) for g, u in usage.items()},
    }


def share(mode: dict[str, Any], k: int, n: int) -> dict[str, Any]:
    """Publisher k's share (of n) of a mode: the rate, the concurrency, the count."""
    out = dict(mode)
    if "rate" in out:
        out["rate"] = float(out["rate"]) / n
    for key in ("concurrency", "count"):
        if out.get(key):
            total = int(out[key])
            out[key] = max(1, total // n + (1 if k < total % n else 0))
    return out


def merged(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """What the publishers did together."""
    errors = [r["first_error"] for r in replies if r["first_error"]]
    return {
        "published": sum(int(r["published"]) for r in replies),
        "errors": sum(int(r["errors"]) for r in replies),
        "first_error": errors[0] if errors else "",
        "started": min(float(r["started"]) for r in replies),
        "ended": max(float(r["ended"]) for r in replies),
        "late": sum(int(r.get("late", 0)) for r in replies),
    }


def measure(
    pipe: Pipeline, tag: str, mode: dict[str, Any], drain_timeout: float, rss_every: float = 1.0
) -> dict[str, Any]:
    """Run one mode on a pipeline and return its figures (with an "rss" series). The
    figures say "complete": false if receipts stopped coming for `drain_timeout` s."""
    _, base = pipe.counts()
    commits_before = pipe.commits()
    meter = procs.Meter(pipe.groups())
    sampler = RssSampler(pipe.rss_pid, rss_every)
    meter.start()
    n = len(pipe.publishers)
    for k, publisher in enumerate(pipe.publishers):
        publisher.send("run", tag=tag, mode=share(mode, k, n))
    # A publisher held back by a slow server may take longer than the mode's duration.
    limit = float(mode["seconds"]) * 3 + 300.0
    driven = merged([await_reply(p, limit, sampler.tick) for p in pipe.publishers])
    expected = int(driven["published"]) * pipe.recipients
    complete = await_receipts(pipe, base, expected, drain_timeout, sampler.tick)
    usage = meter.stop()
    commits_after = pipe.commits()
    samples = _merge([c.call("collect", tag=tag) for c in pipe.consumers])
    out = figures(pipe, mode, driven, usage, samples, complete)
    out["recipient_commits_per_delivery"] = (
        per(since(commits_before, commits_after), out["deliveries"], scale=1.0)
        if commits_before is not None and commits_after is not None
        else None
    )
    out["rss_mb"] = [[round(t, 2), round(v, 2)] for t, v in sampler.points]
    return out


def ed25519_verify_us(rounds: int = 3, n: int = 400) -> float:
    """One Ed25519 verification (the broker's own primitive), in CPU microseconds (as the
    processes' CPU is read from /proc): the mean over a batch of `n`, the fastest of
    `rounds` batches, measured in this process."""
    from broker.core.envelope_suite import ed25519_public_key, ed25519_sign, ed25519_valid

    seed = bytes(range(32))
    message = b"broker.v1 notice header\x00" + bytes(300)
    public, signature = ed25519_public_key(seed), ed25519_sign(seed, message)
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(n):
            if not ed25519_valid(public, signature, message):
                raise AssertionError("the reference signature does not verify")
        best = min(best, (time.thread_time() - started) / n * 1e6)
    return round(best, 3)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
