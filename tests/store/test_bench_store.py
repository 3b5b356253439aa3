"""`broker bench store`: real brokers on SQLite and on one and two PostgreSQL replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.bench import store
from broker.errors import InvalidArgument
from tests.postgres import server_dsn

pytestmark = pytest.mark.slow


def test_bench_store_runs_sqlite_and_postgres_replicas(tmp_path: Path) -> None:
    dsn = server_dsn()
    said: list[str] = []
    report = store.run(dsn, 6, 2, tmp_path, said.append)
    assert [(r.name, r.replicas, r.notices) for r in report.results] == [
        ("sqlite", 1, 6),
        ("postgres x1", 1, 6),
        ("postgres x2", 2, 6),
    ]
    for r in report.results:
        assert r.publish_per_second > 0 and r.delivered_per_second > 0
        assert r.delivered_seconds >= r.publish_seconds  # delivered after acknowledged
        assert r.publish_p50_ms <= r.publish_p99_ms
    ratios = report.ratios()
    assert ratios["sqlite"] == {"publish": 1.0, "delivered": 1.0}
    assert set(ratios) == {"sqlite", "postgres x1", "postgres x2"}
    assert "postgres x2" in report.text() and not report.skipped
    assert any("publishing 6 notices" in line for line in said)


def test_bench_store_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="postgresql://"):
        store.run("mysql://x", 1, 1, tmp_path, print)
    with pytest.raises(InvalidArgument, match="at least 1"):
        store.run(None, 0, 1, tmp_path, print)
