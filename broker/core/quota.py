"""Token buckets: how much an agency may do per second, with a burst.

A bucket holds up to `burst` tokens and gains `rate` tokens per second. A request
costing `cost` tokens is taken when the bucket holds at least min(cost, burst) of
them (so a request larger than the burst passes once the bucket is full, and leaves
the bucket in debt); otherwise the answer is how long to wait until it would pass.
A refused request takes nothing.

Pure: every entry point takes `now_ms`; nothing here reads a clock. The shell keeps
one bucket per agency and quota in memory (broker/server/quotas.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """`per_second` tokens a second, at most `burst` saved up; per_second 0 is no limit."""

    per_second: int = 0
    burst: int = 0

    @property
    def limited(self) -> bool:
        return self.per_second > 0


@dataclass(frozen=True)
class Bucket:
    rate: Rate
    tokens: float
    at_ms: int

    @classmethod
    def full(cls, rate: Rate, now_ms: int) -> Bucket:
        """A bucket holding its whole burst at `now_ms`."""
        return cls(rate, float(max(rate.burst, 1)), now_ms)

    def level(self, now_ms: int) -> float:
        """The tokens held at `now_ms` (a clock that went back refills nothing)."""
        elapsed = max(0, now_ms - self.at_ms)
        return min(
            float(max(self.rate.burst, 1)), self.tokens + elapsed * self.rate.per_second / 1000
        )


def take(bucket: Bucket, cost: int, now_ms: int) -> tuple[Bucket, int]:
    """Take `cost` tokens at `now_ms`.

    Returns (the bucket after, 0) when taken, or (the bucket unchanged, the
    milliseconds to wait, at least 1) when refused. An unlimited rate always takes.
    """
    if not bucket.rate.limited:
        return bucket, 0
    level = bucket.level(now_ms)
    need = float(min(cost, max(bucket.rate.burst, 1)))
    if level >= need:
        return Bucket(bucket.rate, level - cost, max(now_ms, bucket.at_ms)), 0
    wait = math.ceil((need - level) * 1000 / bucket.rate.per_second)
    return bucket, max(1, wait)
