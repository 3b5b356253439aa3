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

from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """`per_second` tokens a second, at most `burst` saved up; per_second 0 is no limit."""

    per_second: int = 0
    burst: int = 0

    @property
    def limited(self) -> bool:
        return self.per_second > 0


UNIT = 1000  # a token is 1000 units: a millisecond at `per_second` refills per_second units


@dataclass(frozen=True)
class Bucket:
    """`units` held (UNIT per token, negative while in debt) as of `at_ms`: integers, so
    the waits are exact."""

    rate: Rate
    units: int
    at_ms: int

    @classmethod
    def full(cls, rate: Rate, now_ms: int) -> Bucket:
        """A bucket holding its whole burst at `now_ms`."""
        return cls(rate, cls.cap(rate), now_ms)

    @staticmethod
    def cap(rate: Rate) -> int:
        return max(rate.burst, 1) * UNIT

    def held(self, now_ms: int) -> int:
        """The units held at `now_ms` (a clock that went back refills nothing)."""
        elapsed = max(0, now_ms - self.at_ms)
        return min(self.cap(self.rate), self.units + elapsed * self.rate.per_second)

    def level(self, now_ms: int) -> float:
        """The tokens held at `now_ms`."""
        return self.held(now_ms) / UNIT


def take(bucket: Bucket, cost: int, now_ms: int) -> tuple[Bucket, int]:
    """Take `cost` tokens at `now_ms`.

    Returns (the bucket after, 0) when taken, or (the bucket unchanged, the
    milliseconds to wait, at least 1) when refused. An unlimited rate always takes.
    """
    rate = bucket.rate
    if not rate.limited:
        return bucket, 0
    held = bucket.held(now_ms)
    need = min(cost * UNIT, bucket.cap(rate))
    if held >= need:
        return Bucket(rate, held - cost * UNIT, max(now_ms, bucket.at_ms)), 0
    wait = -(-(need - held) // rate.per_second)  # ceiling division
    return bucket, max(1, wait)
