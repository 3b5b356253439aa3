"""The bench's arithmetic and report, on numbers made here: percentiles, trends, ratios,
the goals' verdicts, the table, the peers' crypto. No server needed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from broker.bench import plot, report, stats, workload
from broker.bench.peercrypto import Opener, PeerKeys, PeerOpenError, Sealer
from broker.bench.settings import BenchConfig, quick
from broker.errors import InvalidArgument


def test_percentiles_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert stats.percentile(values, 50) == 50.0
    assert stats.percentile(values, 99) == 99.0
    assert stats.percentile(values, 100) == 100.0
    assert stats.percentile([7.0], 99) == 7.0
    lat = stats.latency_ms([0.002, 0.001, 0.003])
    assert lat == {"count": 3, "p50": 2.0, "p95": 3.0, "p99": 3.0, "max": 3.0}
    assert stats.latency_ms([]) == {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 50)


def test_slope_is_per_minute_and_flat_is_zero() -> None:
    growing = [(t, 100.0 + 0.5 * t) for t in range(0, 120, 5)]  # 0.5 MB/s
    assert stats.slope_per_minute(growing) == pytest.approx(30.0)
    assert stats.slope_per_minute([(t, 80.0) for t in range(10)]) == pytest.approx(0.0)
    assert stats.slope_per_minute([(1.0, 5.0)]) is None
    assert stats.slope_per_minute([(1.0, 5.0), (1.0, 6.0)]) is None


def test_ratio_and_per() -> None:
    assert stats.ratio(3, 2) == 1.5
    assert stats.ratio(1, 0) is None and stats.ratio(None, 2) is None
    assert stats.per(0.5, 100) == 5.0 and stats.per(1.0, 0) is None


def test_marker_round_trip() -> None:
    sections = workload.notice_sections("paced-25", 1234.5)
    assert sorted(sections) == ["case_facts", "identity", "judicial"]
    assert sum(len(v) for v in sections.values()) == sum(workload.SECTION_SIZES.values())
    assert workload.parse_marker(sections["case_facts"]) == ("paced-25", 1234.5)
    assert workload.parse_marker(workload.notice_body("closed", 9.25)) == ("closed", 9.25)
    assert workload.parse_marker(b"no marker here") is None
    assert workload.parse_marker(b"bench:tag:notanumber\n") is None


def test_samples_count_each_receipt_once() -> None:
    s = workload.Samples()
    body = workload.notice_body("t", workload.now())
    assert s.on_delivered("k", body)
    assert s.on_receipted("k") and not s.on_receipted("k")
    assert not s.on_receipted("unknown")
    taken = s.take("t")
    assert len(taken["delivered"]) == len(taken["receipted"]) == 1
    assert taken["last"] >= taken["first"]
    assert s.take("t")["delivered"] == []


async def test_closed_loop_respects_count_and_counts_errors() -> None:
    sent: list[int] = []

    async def send(items: Any) -> None:
        sent.extend(i.seq for i in items)
        if any(i.seq == 3 for i in items):
            raise RuntimeError("refused")

    out = await workload.closed_loop(send, "t", seconds=30, count=7, concurrency=3, batch=2)
    assert sorted(sent) == list(range(7))
    assert out.published + out.errors == 7 and out.errors == 2  # the batch holding seq 3
    assert out.first_error == "RuntimeError: refused"


async def test_paced_sends_rate_times_seconds_due_in_order() -> None:
    due: list[float] = []

    async def send(items: Any) -> None:
        due.extend(i.t0 for i in items)

    out = await workload.paced(send, "t", rate=200, seconds=0.1)
    assert out.published == 20 and len(due) == 20
    assert due == sorted(due) and due[1] - due[0] == pytest.approx(1 / 200)


def test_peer_crypto_round_trip_and_tamper() -> None:
    keys = PeerKeys.generate(["A-POL", "B-POL"])
    keys = PeerKeys.from_spec(keys.as_spec())
    message = Sealer(keys, "FR-NCB").seal("n1", b"secret body")
    assert Opener(keys, "B-POL").open(message) == ("n1", b"secret body")
    assert Opener(keys, "A-POL").open(message) == ("n1", b"secret body")
    for i in (0, 70, len(message) - 1):  # signature, metadata, ciphertext
        flipped = bytearray(message)
        flipped[i] ^= 1
        with pytest.raises(PeerOpenError):
            Opener(keys, "A-POL").open(bytes(flipped))
    other = PeerKeys.generate(["A-POL"])
    with pytest.raises(PeerOpenError):
        Opener(other, "A-POL").open(message)


def test_settings_refuse_nonsense() -> None:
    BenchConfig().check()
    assert quick(BenchConfig()).closed_seconds < BenchConfig().closed_seconds
    for bad in (
        {"recipients": 0},
        {"recipient_procs": 11},
        {"rates": (25.0, -1.0)},
        {"capacity_batch": 65},
        {"peers": ("kafka",)},
    ):
        with pytest.raises(InvalidArgument):
            BenchConfig(**bad).check()  # type: ignore[arg-type]
    cfg = BenchConfig(recipients=4, recipient_procs=3)
    assert sorted(a for c in cfg.chunks() for a in c) == sorted(cfg.recipient_ids())


# --- the report, on synthetic results -------------------------------------------------


def mode(notices_per_s: float, p99: float, server_ms: float, rcp_ms: float) -> dict[str, Any]:
    lat = {"count": 100, "p50": p99 / 4, "p95": p99 / 2, "p99": p99, "max": p99 * 1.1}
    return {
        "mode": "closed",
        "notices": 100,
        "complete": True,
        "notices_per_s": notices_per_s,
        "deliveries_per_s": notices_per_s * 10,
        "latency_ms": {"delivered": lat, "receipted": lat},
        "cpu_ms_per_notice": {"server": server_ms, "publisher": 1.0, "recipients": 2.0},
        "recipient_cpu_ms_per_delivery": rcp_ms,
        "recipient_commits_per_delivery": 0.05,
        "peak_rss_mb": {"server": 80.0, "publisher": 60.0, "recipients": 120.0},
    }


def synthetic(cfg: BenchConfig) -> dict[str, Any]:
    ours = {
        "closed": mode(300.0, 40.0, 0.1, 0.2),
        "paced-100": mode(100.0, 12.0, 0.1, 0.2),
        "soak": {**mode(25.0, 10.0, 0.1, 0.2), "rss_mb": [[t, 90.0] for t in range(0, 600, 10)]},
        "backlog": {
            "queued": 100_000,
            "offline_recipient": "DE-POL",
            "fill_s": 100.0,
            "fill_notices_per_s": 1000.0,
            "broker_rss_queued_mb": 200.0,
            "broker_peak_rss_mb": 250.0,
            "drain_s": 50.0,
            "drain_deliveries_per_s": 2000.0,
            "complete": True,
        },
        "capacity": {
            "deliveries_per_s": 6000.0,
            "notices": 10_000,
            "broker_cpu_ms_per_delivery": 0.1,
            "complete": True,
        },
    }
    peers = {
        "nats": {"available": True, "closed": mode(150.0, 20.0, 1.0, 0.15),
                 "paced-100": mode(100.0, 10.0, 1.0, 0.15)},
        "rabbitmq": {"available": True, "closed": mode(100.0, 30.0, 2.0, 0.3),
                     "confirms": {"confirmed_per_s": 1000.0, "in_flight": 256,
                                  "message_bytes": 3000}},
    }  # fmt: skip
    machine = {"cpu": "test", "cores": 2, "kernel": "k", "python": "3", "load_average": [0.0]}
    return report.build(cfg, "broker bench", machine, 50.0, ours, peers, 12.0)


def test_goals_met_and_not_met() -> None:
    cfg = BenchConfig()  # full sizes: 100,000 queued, 600 s soak
    r = synthetic(cfg)
    goals = {g["id"]: g for g in r["goals"]}
    assert goals["throughput"]["value"] == 2.0 and goals["throughput"]["met"] is True
    assert goals["paced-100-p99"]["value"] == 1.2 and goals["paced-100-p99"]["met"] is True
    assert goals["capacity"]["value"] == 6.0 and goals["capacity"]["met"] is True
    assert goals["broker-cpu"]["value"] == 2.0 and goals["broker-cpu"]["met"] is True  # 100/50
    assert goals["recipient-cpu"]["value"] == pytest.approx(1.333, abs=0.001)
    assert goals["backlog-rss"]["met"] is True
    assert goals["soak-flat"]["value"] == 0.0 and goals["soak-flat"]["met"] is True
    assert goals["recipient-fsync"]["value"] == 0.05 and goals["recipient-fsync"]["met"] is True
    assert r["ratios"]["nats"]["closed.notices_per_s"] == 2.0
    assert r["ratios"]["rabbitmq"]["closed.latency_ms.delivered.p99"] == pytest.approx(
        1.333, abs=0.001
    )
    assert "paced-100.notices_per_s" not in r["ratios"]["rabbitmq"]  # it did not run that rate
    assert r["ratios"]["rabbitmq"]["capacity.deliveries_per_s/confirmed_per_s"] == 6.0


def test_goals_undecided_when_the_run_cannot_tell() -> None:
    cfg = quick(BenchConfig())  # 300 queued, a short soak
    r = synthetic(cfg)
    r2 = copy.deepcopy(r)
    goals = {g["id"]: g for g in r2["goals"]}
    assert goals["soak-flat"]["met"] is None and "shorter" in goals["soak-flat"]["detail"]
    ours = r["ours"]
    ours["backlog"]["queued"] = 300
    peers = {"nats": {"available": False, "reason": "down"}, "rabbitmq": r["peers"]["rabbitmq"]}
    goals = {g["id"]: g for g in report.goals(cfg, 50.0, ours, peers)}
    assert goals["throughput"]["met"] is None and goals["recipient-cpu"]["met"] is None
    assert goals["backlog-rss"]["met"] is None
    assert goals["capacity"]["met"] is True
    del ours["closed"]["recipient_commits_per_delivery"]  # not counted: undecided, not met
    assert {g["id"]: g for g in report.goals(cfg, 50.0, ours, peers)}["recipient-fsync"][
        "met"
    ] is None


def test_goals_not_met() -> None:
    cfg = BenchConfig()
    r = synthetic(cfg)
    ours = r["ours"]
    ours["closed"]["notices_per_s"] = 20.0
    ours["closed"]["cpu_ms_per_notice"]["server"] = 5.6
    ours["backlog"]["broker_peak_rss_mb"] = 301.0
    ours["soak"]["trend"] = {"slope_mb_per_min": 3.0}
    ours["closed"]["recipient_commits_per_delivery"] = 1.0  # one fsync per delivery
    goals = {g["id"]: g for g in report.goals(cfg, 50.0, ours, r["peers"])}
    assert goals["recipient-fsync"]["met"] is False
    assert goals["throughput"]["met"] is False
    assert goals["broker-cpu"]["value"] == 112.0 and goals["broker-cpu"]["met"] is False
    assert goals["backlog-rss"]["met"] is False and goals["soak-flat"]["met"] is False


def test_table_and_plot(tmp_path: Path) -> None:
    r = synthetic(BenchConfig())
    text = report.text(r)
    assert "ours / nats:" in text and "ours / rabbitmq:" in text
    assert "met        end-to-end notices/s" in text
    assert "notices/s 2.00" in text
    assert "recipients' fsync'd inbox commits per delivery: closed 0.050" in text
    path = tmp_path / "plot.png"
    plot.write(r, path)
    assert path.read_bytes()[:4] == b"\x89PNG"
