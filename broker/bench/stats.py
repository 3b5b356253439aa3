"""Figures from samples: latency percentiles, rates, the least-squares trend of a series."""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ascending values, by the nearest-rank method."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def latency_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p95, p99 and max of latencies given in seconds, in milliseconds.

    With no samples every percentile is None (count 0)."""
    values = sorted(s * 1000.0 for s in seconds)
    out: dict[str, float | int | None] = {"count": len(values)}
    for name, q in PERCENTILES:
        out[name] = round(percentile(values, q), 3) if values else None
    out["max"] = round(values[-1], 3) if values else None
    return out


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, in value units per minute;
    None with fewer than two distinct times."""
    n = len(points)
    if n < 2:
        return None
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60.0


def ratio(ours: float | int | None, theirs: float | int | None) -> float | None:
    """ours / theirs, rounded to 3 significant decimals; None when either is missing or
    the peer's figure is zero."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return round(float(ours) / float(theirs), 3)


def per(amount: float, count: int, scale: float = 1000.0) -> float | None:
    """amount * scale / count (e.g. CPU ms per notice); None when count is 0."""
    return round(amount * scale / count, 4) if count else None
