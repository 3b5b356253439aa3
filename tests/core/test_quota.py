"""Token buckets (broker/core/quota.py): rate, burst, debt, refusals that take nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.core.quota import Bucket, Rate, take


def test_a_full_bucket_admits_its_burst_then_refuses_with_the_wait() -> None:
    bucket = Bucket.full(Rate(per_second=10, burst=5), now_ms=0)
    for _ in range(5):
        bucket, wait = take(bucket, 1, 0)
        assert wait == 0
    after, wait = take(bucket, 1, 0)
    assert wait == 100  # one token at 10 per second
    assert after == bucket  # a refusal takes nothing


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst() -> None:
    bucket = Bucket.full(Rate(per_second=10, burst=5), now_ms=0)
    bucket, _ = take(bucket, 5, 0)
    assert take(bucket, 1, 99)[1] == 1  # 0.99 tokens: one more millisecond
    bucket, wait = take(bucket, 1, 100)
    assert wait == 0
    assert bucket.level(10_000_000) == 5.0


def test_a_request_above_the_burst_passes_on_a_full_bucket_and_leaves_debt() -> None:
    bucket = Bucket.full(Rate(per_second=1000, burst=100), now_ms=0)
    bucket, wait = take(bucket, 250, 0)
    assert wait == 0 and bucket.level(0) == -150
    _, wait = take(bucket, 1, 0)
    assert wait == 151  # back to one token: 151 tokens at 1000 per second


def test_an_unlimited_rate_always_takes() -> None:
    bucket = Bucket.full(Rate(), now_ms=0)
    for _ in range(1000):
        bucket, wait = take(bucket, 10**9, 0)
        assert wait == 0


def test_a_clock_that_goes_back_refills_nothing() -> None:
    bucket = Bucket.full(Rate(per_second=10, burst=1), now_ms=1000)
    bucket, _ = take(bucket, 1, 1000)
    assert take(bucket, 1, 0)[1] > 0
    assert bucket.level(500) == 0


@given(
    rate=st.integers(1, 10_000),
    burst=st.integers(1, 10_000),
    steps=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 50)), max_size=60),
)
def test_admitted_never_exceeds_burst_plus_rate_times_time(
    rate: int, burst: int, steps: list[tuple[int, int]]
) -> None:
    bucket = Bucket.full(Rate(rate, burst), now_ms=0)
    now = admitted = 0
    for gap, cost in steps:
        now += gap
        after, wait = take(bucket, cost, now)
        if wait == 0:
            admitted += cost
        else:
            assert after == bucket
            # Waiting as told admits it.
            assert take(bucket, cost, now + wait)[1] == 0
        bucket = after
        assert admitted <= burst + rate * now / 1000 + max(c for _g, c in steps)
