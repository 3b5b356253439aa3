"""Fair sharing in the server: each agency's token buckets and its queued deliveries.

The buckets (publishes, bytes, lookups; broker/core/quota.py) live in this process's
memory. With several replicas each replica keeps its own, so an agency spread over
n replicas may reach up to n times its rate in total (a client pinned to one replica
gets exactly its rate); buckets start full when the process starts. The queued
deliveries are read from the store, which every replica shares: a snapshot per
originator refreshed every `refresh_s` seconds, plus what this replica queued since,
so the limit holds across replicas up to one refresh of other replicas' publishes.

Refusals are RateLimited (RESOURCE_EXHAUSTED with a google.rpc.RetryInfo); every
admission and refusal is counted per agency (broker/server/metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from broker.core.quota import Bucket, Rate, take
from broker.errors import RateLimited
from broker.quotas import Quotas
from broker.server import metrics
from broker.store.api import Store
from broker.store.runner import StoreRunner

log = logging.getLogger("broker.server")
QUEUE_RETRY_MS = 1000  # a full queue drains as recipients take their deliveries
HOLD_MAX_MS = 250  # a refused call is answered after min(its wait, this) ...
MAX_HELD = 8  # ... while fewer than this many of the agency's refusals are held


class Refusal(RateLimited):
    """A bucket's refusal: `reason`, and the wait (ms) until the tokens are due."""

    def __init__(self, reason: str, retry_after_ms: int) -> None:
        super().__init__(f"{reason}; retry in {retry_after_ms} ms", retry_after_ms)
        self.reason = reason


def _clock_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class QuotaGate:
    """Admits or refuses an agency's publishes and lookups; `now` is a monotonic clock."""

    def __init__(self, quotas: Quotas, now: Callable[[], int] = _clock_ms) -> None:
        self.quotas = quotas
        self.now = now
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._held: dict[str, int] = {}  # agency -> refusals being held now
        self.queued: dict[str, int] = {}  # originator -> deliveries pending or in flight
        self.refresh_s = 1.0

    @property
    def counts_queues(self) -> bool:
        q = self.quotas
        return q.default.max_queued_deliveries > 0 or any(
            a.max_queued_deliveries > 0 for a in q.agencies.values()
        )

    def _bucket(self, agency: str, kind: str, rate: Rate, now: int) -> Bucket:
        bucket = self._buckets.get((agency, kind))
        if bucket is None or bucket.rate != rate:
            bucket = Bucket.full(rate, now)
        return bucket

    def precheck_publish(self, agency: str, size: int) -> None:
        """Before the request is even parsed: refuse (RateLimited) when the agency could
        not publish a single envelope of `size` bytes now. Takes nothing; a flood that
        ignores its retry delays costs the broker no parsing."""
        self.admit_publish(agency, 1, size, take_tokens=False)

    def admit_publish(
        self, agency: str, envelopes: int, size: int, *, take_tokens: bool = True
    ) -> None:
        """Take `envelopes` publish tokens and `size` byte tokens, both or neither.

        Raises RateLimited naming the limit and the delay after which it would pass."""
        quota = self.quotas.of(agency)
        now = self.now()
        publishes = self._bucket(agency, "publishes", quota.publishes, now)
        data = self._bucket(agency, "bytes", quota.bytes, now)
        publishes_after, wait_p = take(publishes, envelopes, now)
        data_after, wait_b = take(data, size, now)
        if wait_p or wait_b:
            which = "publishes" if wait_p >= wait_b else "bytes"
            metrics.QUOTA_REFUSALS.labels(agency, which).inc()
            wait = max(wait_p, wait_b)
            if which == "publishes":
                per, burst = f"{quota.publishes_per_second} envelopes", publishes.rate.burst
            else:
                per, burst = f"{quota.bytes_per_second} bytes", data.rate.burst
            what = f"{per} per second (burst {burst})"
            raise Refusal(f"{agency} is over its publish quota of {what}", wait)
        if not take_tokens:
            return
        self._buckets[(agency, "publishes")] = publishes_after
        self._buckets[(agency, "bytes")] = data_after
        metrics.QUOTA_ADMITTED.labels(agency, "publishes").inc(envelopes)
        metrics.QUOTA_ADMITTED.labels(agency, "bytes").inc(size)

    def admit_lookup(self, agency: str) -> None:
        """Take one lookup token; raises RateLimited with the delay otherwise."""
        quota = self.quotas.of(agency)
        now = self.now()
        bucket = self._bucket(agency, "lookups", quota.lookups, now)
        after, wait = take(bucket, 1, now)
        if wait:
            metrics.QUOTA_REFUSALS.labels(agency, "lookups").inc()
            raise Refusal(
                f"{agency} is over its lookup quota of {quota.lookups_per_second} per second "
                f"(burst {bucket.rate.burst})",
                wait,
            )
        self._buckets[(agency, "lookups")] = after
        metrics.QUOTA_ADMITTED.labels(agency, "lookups").inc()

    async def hold(self, agency: str, refusal: Refusal) -> Refusal:
        """Answer a refusal only after min(its wait, HOLD_MAX_MS): a client that ignores
        its retry delays then makes at most (calls in flight / hold) calls a second, and
        costs the broker little more than a sleeping coroutine. Returns the refusal with
        what is left of the wait (at least 1 ms). At most MAX_HELD refusals of an agency
        are held at once (each keeps its request in memory); beyond that, at once."""
        if self._held.get(agency, 0) >= MAX_HELD:
            return refusal
        hold = min(refusal.retry_after_ms, HOLD_MAX_MS)
        self._held[agency] = self._held.get(agency, 0) + 1
        try:
            await asyncio.sleep(hold / 1000)
        finally:
            self._held[agency] -= 1
            if not self._held[agency]:
                del self._held[agency]
        return Refusal(refusal.reason, max(1, refusal.retry_after_ms - hold))

    def admit_queued(self, agency: str, adding: int) -> None:
        """Refuse a publish that would queue `adding` deliveries beyond the agency's
        max_queued_deliveries (raises RateLimited); a limit of 0 admits everything."""
        limit = self.quotas.of(agency).max_queued_deliveries
        if limit <= 0:
            return
        queued = self.queued.get(agency, 0)
        if queued + adding > limit:
            metrics.QUOTA_REFUSALS.labels(agency, "queued_deliveries").inc()
            raise RateLimited(
                f"{agency} has {queued} deliveries still queued for its recipients (its quota "
                f"is {limit}); retry in {QUEUE_RETRY_MS} ms, once recipients have taken some",
                QUEUE_RETRY_MS,
            )

    def queued_more(self, agency: str, added: int) -> None:
        """This replica just queued `added` deliveries of `agency`'s notices."""
        if added:
            self.queued[agency] = self.queued.get(agency, 0) + added

    def set_queued(self, snapshot: dict[str, int]) -> None:
        for agency in self.queued.keys() - snapshot.keys():  # all delivered since
            metrics.QUEUED_DELIVERIES.labels(agency).set(0)
        self.queued = dict(snapshot)
        for agency, n in snapshot.items():
            metrics.QUEUED_DELIVERIES.labels(agency).set(n)

    async def refresh(self, runner: StoreRunner[Store]) -> None:
        """Read every originator's queued deliveries from the store."""
        self.set_queued(await runner.call(lambda s: s.queued_by_originator()))

    async def run(self, runner: StoreRunner[Store]) -> None:
        """Refresh the queued deliveries from the store until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh(runner)
            except Exception:  # the store failing is reported by the RPCs; keep the last
                log.warning("could not count queued deliveries", exc_info=True)
