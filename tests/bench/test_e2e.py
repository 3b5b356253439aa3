"""`broker bench` end to end, ours only, in a tiny configuration through the real CLI:
a real `broker serve` process, real worker processes on the SDK, real receipts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.cli.main import main

pytestmark = pytest.mark.integration

TINY = [
    "bench",
    "--json",
    "--recipients", "3",
    "--publishers", "2",
    "--recipient-procs", "2",
    "--concurrency", "2",
    "--seconds", "0.6",
    "--rates", "20",
    "--paced-seconds", "0.5",
    "--soak-seconds", "0.6",
    "--soak-rate", "10",
    "--backlog", "15",
    "--capacity-notices", "8",
    "--drain-timeout", "60",
    "--peers", "none",
]  # fmt: skip


def ordered(lat: dict[str, Any]) -> bool:
    return lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def check_mode(m: dict[str, Any], recipients: int) -> None:
    assert m["errors"] == 0, m["first_error"]
    assert m["notices"] >= 1
    assert m["complete"] is True
    assert m["expected_deliveries"] == m["notices"] * recipients
    assert m["deliveries"] == m["delivered"] == m["expected_deliveries"]
    for kind in ("delivered", "receipted"):
        lat = m["latency_ms"][kind]
        assert lat["count"] == m["deliveries"]
        assert lat["p50"] > 0 and ordered(lat)
    # A receipt is acknowledged after its delivery was verified.
    assert m["latency_ms"]["receipted"]["max"] >= m["latency_ms"]["delivered"]["p50"]
    assert m["notices_per_s"] > 0 and m["deliveries_per_s"] == pytest.approx(
        m["notices_per_s"] * recipients, rel=0.01
    )
    for group in ("server", "publisher", "recipients"):
        assert m["cpu_s"][group] > 0
        assert m["cpu_ms_per_notice"][group] > 0
        assert m["peak_rss_mb"][group] > 10
    assert m["recipient_cpu_ms_per_delivery"] > 0


def test_bench_ours_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "latency.png"
    assert main([*TINY, "--dir", str(tmp_path), "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "broker-bench/1"
    assert report["config"]["recipients"] == 3
    assert report["ed25519_verify_us"] > 0
    ours = report["ours"]
    assert sorted(ours["audience"]) == ["DE-POL", "ES-POL", "IT-POL"]
    assert all(s == ["case_facts", "identity", "judicial"] for s in ours["audience"].values())
    for tag in ("closed", "paced-20", "soak"):
        check_mode(ours[tag], 3)
        # Every delivery was durably taken in by a commit of its node's inbox (the nodes'
        # other commits, such as a newer checkpoint remembered, come on top).
        assert ours[tag]["recipient_commits_per_delivery"] > 0, tag
    assert ours["paced-20"]["rate"] == 20 and ours["paced-20"]["notices"] == 10
    assert ours["soak"]["trend"]["samples"] >= 1 and ours["soak"]["rss_mb"]
    backlog = ours["backlog"]
    assert backlog["queued"] == backlog["drained"] == 15 and backlog["complete"]
    assert backlog["broker_peak_rss_mb"] >= backlog["broker_rss_queued_mb"] * 0.5 > 0
    assert backlog["drain_deliveries_per_s"] > 0
    # 15 deliveries queued for one node are drained in a response or two: one commit each.
    assert 0 < backlog["recipient_commits_per_delivery"] < 1
    cap = ours["capacity"]
    assert cap["complete"] and cap["deliveries"] == cap["expected_deliveries"] == 8 * 3
    assert cap["deliveries_per_s"] > 0 and cap["broker_cpu_ms_per_delivery"] > 0
    # No peer ran: no ratios, and the goals that need one are undecided, never "met".
    assert report["peers"] == {} and report["ratios"] == {}
    goals = {g["id"]: g for g in report["goals"]}
    assert set(goals) == {
        "throughput", "paced-100-p99", "capacity", "broker-cpu", "recipient-cpu",
        "recipient-fsync", "backlog-rss", "soak-flat",
    }  # fmt: skip
    for gid in ("throughput", "paced-100-p99", "capacity", "recipient-cpu", "backlog-rss"):
        assert goals[gid]["met"] is None
    assert goals["broker-cpu"]["value"] > 0 and goals["broker-cpu"]["met"] in (True, False)
    fsync = goals["recipient-fsync"]
    assert fsync["value"] == ours["closed"]["recipient_commits_per_delivery"]
    assert fsync["met"] is (fsync["value"] < 1)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("broker-bench-*")), "the scratch directory is removed"


def test_bench_refuses_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--rates", "fast"]) == 2
    assert "--rates takes numbers" in capsys.readouterr().err
    assert main(["bench", "--modes", "closed,bogus"]) == 2
    assert "unknown mode or peer ['bogus']" in capsys.readouterr().err
    assert main(["bench", "--recipients", "3", "--recipient-procs", "4"]) == 2
    assert "--recipient-procs" in capsys.readouterr().err


def test_bench_ours_tiny_hybrid_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`broker bench --suite hybrid`: every agency gets PQ keys, our pipeline seals hybrid
    (publish and sealed-ahead capacity), recipients receipt hybrid."""
    argv = [*TINY, "--modes", "closed,capacity", "--suite", "hybrid", "--dir", str(tmp_path)]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["suite"] == "hybrid"
    check_mode(report["ours"]["closed"], 3)
    cap = report["ours"]["capacity"]
    assert cap["complete"] and cap["deliveries"] == cap["expected_deliveries"] == 8 * 3
